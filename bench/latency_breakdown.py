#!/usr/bin/env python3
"""Reads bench/latency_breakdown.sh output (perf trace text, perf sched timehist, thread ids)
and prints where one ping's round trip goes: the median of each hop over all pings.

A ping A -> B -> A through pilot crosses 4 data-plane threads. For each thread the hop is split
into "wake" (the thread's poll returns: queueing + the scheduler waking it), "read" (the read
syscall that got the packet) and "work+send" (crypto + the send syscall, which in a namespace
pair also runs the receiver's softirq). Timestamps are perf trace's (syscall entry + duration);
perf's own overhead makes every syscall slower, so read the shares, not the absolute values.
"""
import os
import re
import statistics
import sys

# "TS ( DUR ms): comm/tid call(args) = RET", or for a syscall that blocked and was printed in
# two parts, "TS ( DUR ms): comm/tid  ... [continued]: call()) = RET" (TS = entry time).
LINE = re.compile(
    r"^\s*(?P<ts>[0-9.]+)\s+\(\s*(?P<dur>[0-9.]+) ms\):\s+(?P<comm>.+?)/(?P<tid>\d+)\s+"
    r"(?:\.\.\. \[continued\]: )?(?P<call>\w+)\(.*\)\s+=\s+(?P<ret>-?\d+|0x[0-9a-f]+)"
)


def load_threads(path):
    names = {}
    with open(path) as f:
        for line in f:
            pid, tid, comm = line.split(maxsplit=2)
            names[tid] = (pid, comm.strip())
    return names


def load_trace(path):
    ev = []
    with open(path, errors="replace") as f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            ret = m["ret"]
            ret = int(ret, 16) if ret.startswith("0x") else int(ret)
            start = float(m["ts"])
            ev.append((start, start + float(m["dur"]), m["comm"].strip(), m["tid"], m["call"], ret))
    ev.sort()
    return ev


def main():
    out = sys.argv[1]
    pids = {}
    with open(os.path.join(out, "threads.txt")) as f:
        order = []
        for line in f:
            pid = line.split()[0]
            if pid not in order:
                order.append(pid)
    names = load_threads(os.path.join(out, "threads.txt"))
    a_pid, b_pid = order[0], order[1]

    def tid_of(pid, comm):
        return next((t for t, (p, c) in names.items() if p == pid and c == comm), None)

    th = {
        "A inner": tid_of(a_pid, "pilot-inner-rx"),
        "B udp": tid_of(b_pid, "pilot-udp-rx"),
        "B inner": tid_of(b_pid, "pilot-inner-rx"),
        "A udp": tid_of(a_pid, "pilot-udp-rx"),
    }
    ev = load_trace(os.path.join(out, "trace.txt"))
    by_tid = {}
    for e in ev:
        by_tid.setdefault(e[3], []).append(e)
    pings = [e for e in ev if e[2] == "ping" and e[4] in ("sendto", "sendmsg") and e[5] > 0]
    ping_rx = [e for e in ev if e[2] == "ping" and e[4] in ("recvmsg", "recvfrom") and e[5] > 0]
    reads = {"A inner": ("read", "readv"), "B inner": ("read", "readv"),
             "A udp": ("recvmmsg", "recvmsg"), "B udp": ("recvmmsg", "recvmsg")}
    sends = {"A inner": ("sendmsg", "sendto", "sendmmsg"), "B inner": ("sendmsg", "sendto", "sendmmsg"),
             "A udp": ("write", "writev"), "B udp": ("write", "writev")}
    hops = {}

    def add(name, v):
        hops.setdefault(name, []).append(v * 1000.0)  # perf trace times are ms

    def hop(thread, t_prev):
        """(wake end, read end, send end) of the first packet `thread` handles after t_prev."""
        evs = by_tid.get(th[thread] or "", [])
        rd = next((e for e in evs if e[1] > t_prev and e[4] in reads[thread] and e[5] > 0), None)
        if rd is None:
            return None
        polls = [e for e in evs if e[4] in ("poll", "ppoll") and t_prev <= e[1] <= rd[0]]
        wake = polls[-1][1] if polls else None
        sd = next((e for e in evs if e[0] >= rd[1] and e[4] in sends[thread] and e[5] > 0), None)
        if sd is None:
            return None
        return wake, rd[1], sd[1]

    done = 0
    for p in pings:
        t = p[1]
        start = t
        ok = True
        for name in ["A inner", "B udp", "B inner", "A udp"]:
            h = hop(name, t)
            if h is None or h[2] - start > 5.0:  # ms: later than 5 ms is not this ping
                ok = False
                break
            wake, rd, sd = h
            if wake is not None:
                add(f"{name}: queue + wake-up", wake - t)
                add(f"{name}: read syscall", rd - wake)
            else:
                add(f"{name}: queue + wake-up", 0.0)
                add(f"{name}: read syscall", rd - t)
            add(f"{name}: crypto + send syscall", sd - rd)
            t = sd
        if not ok:
            continue
        rx = next((e for e in ping_rx if e[1] > t), None)
        if rx is None or rx[1] - start > 5.0:
            continue
        add("ping wakes with the reply", rx[1] - t)
        add("TOTAL (ping send -> ping receive)", rx[1] - start)
        done += 1
    print(f"Round trips matched: {done} of {len(pings)} (times in µs, median / p90, under perf trace)\n")
    print("| step | median µs | p90 µs |")
    print("|---|---|---|")
    for name, v in hops.items():
        v = sorted(v)
        p90 = v[min(len(v) - 1, int(0.9 * (len(v) - 1)))]
        print(f"| {name} | {statistics.median(v):.1f} | {p90:.1f} |")
    path = os.path.join(out, "timehist.txt")
    if os.path.exists(path):
        sched_summary(path, names)
    path = os.path.join(out, "syms.txt")
    if os.path.exists(path):
        profile_summary(path)
    for f in ["ping-plain.txt", "ping-veth.txt", "ping-traced.txt", "ping-sched.txt"]:
        fp = os.path.join(out, f)
        if os.path.exists(fp):
            txt = open(fp).read()
            t = sorted(float(x) for x in re.findall(r"time=([0-9.]+) ms", txt))
            if t:
                print(f"\n{f}: median {statistics.median(t):.3f} ms over {len(t)} pings", end="")
    print()


# Kinds of work, matched in this order against "[k|.] symbol" of each perf report line.
KINDS = [
    ("context switch / wake-up (IRQs off: samples land on the IRQ restore)",
     r"finish_task_switch|_raw_spin_unlock_irqrestore|__schedule|try_to_wake_up|\bschedule|"
     r"switch_mm|__switch_to|pick_next|enqueue|dequeue|update_curr|select_task"),
    ("poll(), syscall entry/exit, user copies",
     r"poll|entry_SYSCALL|syscall_exit|syscall_return|fdget|__get_user|copy_from_user|"
     r"_copy_to_user|__virt_addr_valid|check_heap"),
    ("crypto (ChaCha20-Poly1305)", r"chacha|poly1305"),
    ("WireGuard state + pilot core (boringtun, peer lookup, counters)",
     r"boringtun|pilot::wg::core|Tunn|Session"),
    ("pilot I/O loop, tun-rs, quinn-udp, libc",
     r"pilot::|tun_rs|quinn_udp|\[\.\] (read|write|sendmsg|recvmmsg|__poll|clock_gettime)|"
     r"std::|libc|memcpy|memmove"),
]


def profile_summary(path):
    """Share of the receive threads' CPU samples per kind of work."""
    tot, total = {}, 0.0
    for line in open(path):
        m = re.match(r"\s*([0-9.]+)%\s+(\S+)\s+(\S+)\s+\[(.)\]\s+(.*)", line)
        if not m:
            continue
        pct, sym = float(m[1]), f"[{m[4]}] {m[5]}"
        total += pct
        kind = next((k for k, rx in KINDS if re.search(rx, sym)), None)
        if kind is None:
            kind = "kernel packet path (TUN, IP, UDP, veth)" if m[4] == "k" else "other user code"
        tot[kind] = tot.get(kind, 0.0) + pct
    if not total:
        return
    print("\nCPU samples of the pilot-udp-rx and pilot-inner-rx threads (perf record), by kind:\n")
    print("| kind of work | share |")
    print("|---|---|")
    for kind, pct in sorted(tot.items(), key=lambda kv: -kv[1]):
        print(f"| {kind} | {pct / total * 100:.1f} % |")


def sched_summary(path, names):
    """Median scheduler delay (wake-up to running) per pilot data-plane thread."""
    delays = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 6 or not parts[0][0].isdigit():
                continue
            m = re.search(r"\[(\d+)/(\d+)\]", line)
            if not m or m[1] not in names:
                continue
            try:
                sch, run = float(parts[-2]), float(parts[-1])
            except ValueError:
                continue
            key = f"{names[m[1]][0]} {names[m[1]][1]}"
            delays.setdefault(key, []).append((sch * 1000.0, run * 1000.0))
    print("\nPer wake-up of each pilot thread (perf sched timehist), µs: scheduler delay "
          "(woken -> running) and run time (running -> blocked again):\n")
    print("| pid thread | runs | delay median | delay p90 | run median | run p90 |")
    print("|---|---|---|---|---|---|")
    for k, v in sorted(delays.items()):
        d, r = sorted(x for x, _ in v), sorted(y for _, y in v)
        p90 = int(0.9 * (len(v) - 1))
        print(f"| {k} | {len(v)} | {statistics.median(d):.0f} | {d[p90]:.0f} | "
              f"{statistics.median(r):.0f} | {r[p90]:.0f} |")


if __name__ == "__main__":
    main()
