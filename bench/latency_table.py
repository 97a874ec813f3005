#!/usr/bin/env python3
"""Prints the bench/latency.sh table: latency_table.py OUT_STAMP_DIR.

One row per system and pass: round trip through the tunnel (median, p99), the raw veth between
the same namespaces measured right after (median, p99), the added milliseconds (tunnel − veth,
median and p99, same system, same pass), single-stream TCP through the tunnel, and for pilot
its TCP as a ratio of pilot-before's in the same pass. A summary gives the median over passes.
"""
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from results import fmt, g, header, load_runs, row  # noqa: E402

ORDER = ["pilot-before", "pilot", "gotatun", "boringtun", "wireguard-go"]


def cells(r):
    """(tun p50, tun p99, veth p50, veth p99, added p50, added p99, loss %, tcp Mbit/s)."""
    t50, t99 = g(r, "ping_tunnel", "p50"), g(r, "ping_tunnel", "p99")
    v50, v99 = g(r, "ping_veth", "p50"), g(r, "ping_veth", "p99")
    a50 = t50 - v50 if None not in (t50, v50) else None
    a99 = t99 - v99 if None not in (t99, v99) else None
    return t50, t99, v50, v99, a50, a99, g(r, "ping_tunnel", "loss_pct"), g(r, "tcp_1", "receiver_mbps")


def main():
    runs = load_runs(sys.argv[1])
    print("Round trip, ms (ping -c N -i 0.01; veth = the raw veth between the same namespaces, "
          "right after). TCP = iperf3 1 stream through the tunnel, Mbit/s.\n")
    header("pass", "system", "tunnel p50", "tunnel p99", "veth p50", "veth p99", "**added p50**", "added p99",
           "loss %", "TCP Mbit/s", "TCP ÷ pilot-before")
    agg = {}
    for run, res in runs:
        before = g(res.get("pilot-before"), "tcp_1", "receiver_mbps")
        for name in ORDER + sorted(set(res) - set(ORDER)):
            r = res.get(name)
            if not r or name == "veth":
                continue
            t50, t99, v50, v99, a50, a99, loss, tcp = cells(r)
            ratio = "–"
            if name == "pilot" and before and tcp is not None:
                ratio = f"{tcp / before:.2f}"
            print(row(run, name, fmt(t50, 3), fmt(t99, 3), fmt(v50, 3), fmt(v99, 3), f"**{fmt(a50, 3)}**",
                      fmt(a99, 3), fmt(loss, 1), fmt(tcp, 0), ratio))
            agg.setdefault(name, []).append((a50, a99, tcp))
    print("\nMedian over passes: added round trip over the veth (ms) and TCP (Mbit/s).\n")
    header("system", "added p50", "added p99", "TCP Mbit/s", "passes")
    for name in ORDER + sorted(set(agg) - set(ORDER)):
        if name not in agg:
            continue
        cols = list(zip(*agg[name]))
        med = [statistics.median([v for v in c if v is not None]) if any(v is not None for v in c)
               else None for c in cols]
        print(row(name, fmt(med[0], 3), fmt(med[1], 3), fmt(med[2], 0), len(agg[name])))


if __name__ == "__main__":
    main()
