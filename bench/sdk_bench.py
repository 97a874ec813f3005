#!/usr/bin/env python3
"""Messages through the Python SDK vs through the CLI, and the request/reply round trip
through the SDK, in one run: a loopback registry and two userspace daemons that trust each
other (the SDK tests' kit, sdk/python/tests/conftest.py). Prints one JSON object.

Env: N_SDK (messages sent with the sync client, default 300), N_CLI (`pilotctl send-message`
runs, default 100), N_ASYNC (messages with the async client, default 300, CONCURRENCY at once,
default 16), N_RTT (round trips, default 50)."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "sdk/python/tests"))

from conftest import Node, Registry, make_trusted, pilot_bin, wait_until  # noqa: E402
from pilot_agent import AsyncClient  # noqa: E402


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1)


def sdk_sync(a, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        s = a.client.send_message("sdk-b", f"sdk {i}")
        assert s.status in ("delivered", "queued"), s
    return time.perf_counter() - t0


def cli(a, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        p = subprocess.run([a.bin, "--json", "send-message", "sdk-b", "--type", "text", "--data",
                            f"cli {i}"], env=a.env(), capture_output=True, stdin=subprocess.DEVNULL)
        assert p.returncode == 0, p.stderr
    return time.perf_counter() - t0


def sdk_async(a, n: int, concurrency: int) -> float:
    async def go():
        async with AsyncClient(home=a.home) as c:
            sem = asyncio.Semaphore(concurrency)

            async def one(i):
                async with sem:
                    await c.send_message("sdk-b", f"async {i}")
            t0 = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(n)))
            return time.perf_counter() - t0
    return asyncio.run(go())


def round_trips(a, b, n: int, use_wait: bool) -> list:
    """Request/reply: A sends, B's responder (on its event stream) answers. With the
    messages service's `wait=` the answer is B's `reply`; before it, B sends a new message
    back and A waits for it on its own event stream."""
    stop = threading.Event()
    ready = threading.Event()

    def responder():
        with b.client.events() as events:
            ready.set()
            for e in events:
                if stop.is_set():
                    return
                if e.type == "message_received" and str(e.message.data).startswith("q "):
                    if use_wait:
                        b.client.reply(e.message.id, "a " + e.message.data[2:])
                    else:
                        b.client.send_message("sdk-a", "a " + e.message.data[2:])

    threading.Thread(target=responder, daemon=True).start()
    assert ready.wait(10)
    times = []
    with a.client.events() as mine:
        for i in range(n):
            t0 = time.perf_counter()
            if use_wait:
                s = a.client.send_message("sdk-b", f"q {i}", wait=10)
                assert s.reply is not None and s.reply.data == f"a {i}", s.raw
            else:
                a.client.send_message("sdk-b", f"q {i}")
                for e in mine:
                    if e.type == "message_received" and e.message.data == f"a {i}":
                        break
            times.append((time.perf_counter() - t0) * 1000)
    stop.set()
    a.client.send_message("sdk-b", "stop")
    return times


def main() -> int:
    bin = pilot_bin()
    reg = Registry(bin)
    a = b = None
    try:
        a = Node(bin, "sdk-a", reg)
        b = Node(bin, "sdk-b", reg)
        make_trusted(a, b)
        assert wait_until(15, lambda: a.client.send_message("sdk-b", "warm").status == "delivered", 0.2)
        out = {"binary": bin, "busy_machine": True}
        n = env_int("N_SDK", 300)
        out["sdk_sync_msgs_per_s"] = rate(n, sdk_sync(a, n))
        b.client.inbox(clear=True)
        n = env_int("N_CLI", 100)
        out["cli_msgs_per_s"] = rate(n, cli(a, n))
        b.client.inbox(clear=True)
        n, conc = env_int("N_ASYNC", 300), env_int("CONCURRENCY", 16)
        out[f"sdk_async_c{conc}_msgs_per_s"] = rate(n, sdk_async(a, n, conc))
        b.client.inbox(clear=True)
        out["sdk_over_cli"] = round(out["sdk_sync_msgs_per_s"] / out["cli_msgs_per_s"], 1)
        import httpx
        with httpx.Client(transport=httpx.HTTPTransport(uds=a.socket)) as h:
            paths = set(h.get("http://pilot/v1/openapi.json").json().get("paths", {}))
        use_wait = any(p.startswith("/v1/messages/") and p.endswith("/reply") for p in paths)
        times = round_trips(a, b, env_int("N_RTT", 50), use_wait)
        out["rtt_method"] = "send_message(wait=) + reply" if use_wait else "message + message back (events)"
        out["rtt_ms_median"] = round(statistics.median(times), 2)
        out["rtt_ms_p90"] = round(sorted(times)[int(len(times) * 0.9) - 1], 2)
        print(json.dumps(out, indent=2))
        return 0
    finally:
        for n in (a, b):
            if n is not None:
                n.stop()
        reg.stop()


if __name__ == "__main__":
    sys.exit(main())
