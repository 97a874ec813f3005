#!/usr/bin/env python3
"""Pub/sub benchmark driver (bench/pubsub.sh runs it): one publisher on the broker daemon's
local API, SUBS `pilotctl subscribe` processes on the subscriber daemon, each its own overlay
connection to the broker. Prints events/s and delivery latency as JSON.

Usage: pubsub.py PILOTCTL BROKER_HOME SUB_HOME BROKER_NAME SUBS EVENTS RATE SIZE
RATE 0 publishes as fast as the API answers (throughput); RATE > 0 paces the publisher
(latency without queueing). Latency = the subscriber process reading the event − the broker's
`ts_ms` stamp (one machine, one clock).
"""
import http.client
import json
import os
import selectors
import socket
import subprocess
import sys
import time


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("pilot")
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def api(conn, method, path, body=None):
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    env = json.loads(r.read())
    if env.get("status") != "ok":
        raise SystemExit(f"{method} {path}: {env}")
    return env["data"]


def main():
    pilotctl, broker_home, sub_home, broker, subs, events, rate, size = sys.argv[1:9]
    subs, events, rate, size = int(subs), int(events), float(rate), int(size)
    conn = UnixHTTP(os.path.join(broker_home, "pilot.sock"))
    env = dict(os.environ, PILOT_HOME=sub_home)
    topic = f"bench.r{int(rate)}.s{subs}"
    procs = [subprocess.Popen([pilotctl, "--json", "subscribe", broker, topic, "--count",
                               str(events), "--timeout", "300"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
             for _ in range(subs)]
    deadline = time.time() + 30
    while len([s for s in api(conn, "GET", "/v1/pubsub")["subscribers"]
               if topic in s["patterns"]]) < subs:
        if time.time() > deadline:
            raise SystemExit("subscribers did not come up")
        time.sleep(0.05)
    sel = selectors.DefaultSelector()
    bufs = {}
    for p in procs:
        os.set_blocking(p.stdout.fileno(), False)
        sel.register(p.stdout, selectors.EVENT_READ, p)
        bufs[p] = b""
    lat, got, last_seq = [], 0, {}
    gaps = 0

    def drain(timeout):
        nonlocal got, gaps
        for key, _ in sel.select(timeout):
            p = key.data
            chunk = os.read(p.stdout.fileno(), 1 << 20)
            now = time.time() * 1000
            if not chunk:
                sel.unregister(p.stdout)
                continue
            bufs[p] += chunk
            *lines, bufs[p] = bufs[p].split(b"\n")
            for line in lines:
                e = json.loads(line)["event"]
                lat.append(now - e["ts_ms"])
                if e["seq"] != last_seq.get(p, 0) + 1:
                    gaps += 1
                last_seq[p] = e["seq"]
                got += 1

    payload = "x" * size
    t0 = time.time()
    for i in range(events):
        api(conn, "POST", "/v1/pubsub/publish", {"topic": topic, "data": payload})
        if rate > 0:
            target = t0 + (i + 1) / rate
            while time.time() < target:
                drain(max(0.0, target - time.time()))
        else:
            drain(0)
    published = time.time()
    while got < subs * events and sel.get_map():
        drain(1.0)
        if time.time() - published > 120:
            break
    done = time.time()
    status = api(conn, "GET", "/v1/pubsub")
    dropped = sum(s["dropped"] for s in status["subscribers"] if topic in s["patterns"])
    for p in procs:
        p.kill()
        p.wait()
    lat.sort()
    pct = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 3) if lat else None
    print(json.dumps({
        "subscribers": subs, "events": events, "rate": rate, "size": size,
        "delivered": got, "expected": subs * events, "dropped": dropped, "gaps": gaps,
        "publish_s": round(published - t0, 3), "total_s": round(done - t0, 3),
        "events_per_s": round(events / (done - t0), 1),
        "deliveries_per_s": round(got / (done - t0), 1),
        "latency_ms": {"p50": pct(0.50), "p99": pct(0.99), "max": pct(1.0)},
    }))


if __name__ == "__main__":
    main()
