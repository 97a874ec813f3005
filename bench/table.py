#!/usr/bin/env python3
"""Prints one markdown table from bench/throughput.sh output: table.py OUT_STAMP_DIR."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from results import fmt as f, g, header, load_runs, row  # noqa: E402

rows = load_runs(sys.argv[1])


def cpu(r, test):
    dc = g(r, test, "daemon_cpu") or []
    return "/".join(f(x.get("cpu_pct")) for x in dc) or "–"


def rss(r, key):
    m = r.get(key) or []
    return "/".join(f(x.get("rss_kib", 0) / 1024, 1) for x in m) or "–"


header("run", "system", "TCP 1 stream Mbit/s", "TCP -P 4", "TCP -R 1", "HTTP GET", "ping avg / p99 ms",
       "setup ms", "daemon CPU % A/B (1 stream)", "RSS MiB A/B idle → end")
for run, res in rows:
    for name in ["pilot", "pilot-baseline", "veth", "wireguard-go", "boringtun", "nebula"]:
        r = res.get(name)
        if not r:
            continue
        if name == "veth":
            pv = g(res.get("pilot"), "ping_veth") or {}
            print(row(run, "raw veth", f(g(r, "tcp_1", "receiver_mbps")), f(g(r, "tcp_4", "receiver_mbps")), "–", "–",
                      f"{f(pv.get('avg'), 3)} / {f(pv.get('p99'), 3)}", "–", "–", "–"))
            continue
        pt = r.get("ping_tunnel") or {}
        mem_end = rss(r, "mem_end") if r.get("mem_end") else rss(r, "mem_after_iperf")
        print(row(run, name, f(g(r, "tcp_1", "receiver_mbps")), f(g(r, "tcp_4", "receiver_mbps")),
                  f(g(r, "tcp_1_rev", "receiver_mbps")), f(g(r, "http_get", "mbps")),
                  f"{f(pt.get('avg'), 3)} / {f(pt.get('p99'), 3)}", f(r.get("setup_to_first_ping_ms")),
                  cpu(r, "tcp_1"), f"{rss(r, 'mem_idle')} → {mem_end}"))
    refs = [res[n] for n in ["wireguard-go", "boringtun", "nebula"] if n in res]
    p = res.get("pilot")
    base = res.get("pilot-baseline")
    if p and base:
        for test, label in [("tcp_1", "TCP 1 stream"), ("tcp_4", "TCP -P 4"), ("tcp_1_rev", "TCP -R 1"), ("http_get", "HTTP GET")]:
            key = "mbps" if test == "http_get" else "receiver_mbps"
            old, new = g(base, test, key) or 0, g(p, test, key) or 0
            if old:
                print(f"\n{run}: {label}: this build {new:.0f} / baseline {old:.0f} = **{new/old:.2f}×**", end="")
        pn, pb = g(p, "ping_tunnel", "avg"), g(base, "ping_tunnel", "avg")
        if pn and pb:
            print(f"\n{run}: ping avg: this build {pn:.3f} ms / baseline {pb:.3f} ms", end="")
        print()
    if p and refs:
        for test, label in [("tcp_1", "TCP 1 stream"), ("tcp_4", "TCP -P 4"), ("tcp_1_rev", "TCP -R 1")]:
            best = max((g(x, test, "receiver_mbps") or 0) for x in refs)
            mine = g(p, test, "receiver_mbps") or 0
            if best:
                print(f"\n{run}: {label}: pilot {mine:.0f} / best reference {best:.0f} = **{mine/best:.2f}×**", end="")
        print()
