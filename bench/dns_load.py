#!/usr/bin/env python3
"""A small DNS load tool: queries per second and latency percentiles against one server.

    bench/dns_load.py SERVER:PORT NAME [NAME...] [--seconds S] [--inflight N] [--type aaaa|a]

Keeps N queries in flight over one UDP socket (ids 0..65535, round-robin over the names) for S
seconds; prints one JSON line: queries sent, answered, lost (no answer within 1 s), rcode
counts, qps, p50/p99/max latency in ms. Raw RFC 1035 packets, standard library only.
"""
import json
import socket
import struct
import sys
import time


def query(qid, name, qtype):
    head = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.strip(".").split("."))
    return head + labels + b"\0" + struct.pack(">HH", qtype, 1)


def main(argv):
    args, names, opts = argv[1:], [], {"--seconds": "5", "--inflight": "32", "--type": "aaaa"}
    i = 0
    while i < len(args):
        if args[i] in opts:
            opts[args[i]] = args[i + 1]
            i += 2
        else:
            names.append(args[i])
            i += 1
    server, names = names[0], names[1:]
    host, port = server.rsplit(":", 1)
    addr = (host.strip("[]"), int(port))
    qtype = 28 if opts["--type"] == "aaaa" else 1
    s = socket.socket(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    inflight, lat, rcodes, sent, lost = {}, [], {}, 0, 0
    end = time.monotonic() + float(opts["--seconds"])
    qid = 0
    while time.monotonic() < end or inflight:
        while time.monotonic() < end and len(inflight) < int(opts["--inflight"]):
            qid = (qid + 1) & 0xFFFF
            s.sendto(query(qid, names[qid % len(names)], qtype), addr)
            inflight[qid] = time.monotonic()
            sent += 1
        try:
            d = s.recv(2048)
        except socket.timeout:
            lost += len(inflight)
            inflight.clear()
            continue
        rid, flags = struct.unpack(">HH", d[:4])
        t0 = inflight.pop(rid, None)
        if t0 is not None:
            lat.append((time.monotonic() - t0) * 1000)
            rc = flags & 0xF
            rcodes[rc] = rcodes.get(rc, 0) + 1
    lat.sort()
    pct = lambda p: round(lat[min(len(lat) - 1, int(len(lat) * p))], 3) if lat else None
    secs = float(opts["--seconds"])
    print(json.dumps({"sent": sent, "answered": len(lat), "lost": lost, "rcodes": rcodes,
                      "qps": round(len(lat) / secs), "p50_ms": pct(0.5), "p99_ms": pct(0.99),
                      "max_ms": round(lat[-1], 3) if lat else None}))


if __name__ == "__main__":
    main(sys.argv)
