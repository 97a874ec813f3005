"""The SDK's service methods (issue 11's contract: messages wait/reply, files, pub/sub,
tasks) and the example swarm of examples/python/, against real daemons.

Each test first checks that the daemon's OpenAPI document has its routes, and fails (never
skips) when one is missing, naming it."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import threading
from pathlib import Path

import pytest

from conftest import REPO, wait_until
from pilot_agent import AsyncClient


def _paths(node):
    import httpx
    with httpx.Client(transport=httpx.HTTPTransport(uds=node.socket), base_url="http://pilot") as h:
        return set(h.get("/v1/openapi.json").json().get("paths", {}))


def _shape(path):
    """A route with its parameter names blanked: `/v1/tasks/{id}` and `/v1/tasks/{task_id}` match."""
    import re
    return re.sub(r"\{[^}]*\}", "{}", path)


def needs(node, route):
    if _shape(route) not in {_shape(p) for p in _paths(node)}:
        pytest.fail(f"the daemon's OpenAPI document has no {route}")


def contains(value, want) -> bool:
    """Whether ``want`` appears anywhere in ``value`` (as a JSON value, or JSON text)."""
    if value == want:
        return True
    if isinstance(value, str):
        try:
            return contains(json.loads(value), want)
        except ValueError:
            return False
    if isinstance(value, dict):
        return any(contains(v, want) for v in value.values())
    if isinstance(value, list):
        return any(contains(v, want) for v in value)
    return False


def test_send_message_with_wait_returns_the_peers_reply(pair):
    a, b = pair
    needs(a, "/v1/messages/{id}/reply")

    def answer():
        with b.client.events() as events:
            ready.set()
            for e in events:
                if e.type == "message_received" and e.message.data == "what is 6*7?":
                    b.client.reply(e.message.id, "42")
                    return

    ready = threading.Event()
    t = threading.Thread(target=answer, daemon=True)
    t.start()
    assert ready.wait(10)
    sent = a.client.send_message("sdk-b", "what is 6*7?", wait=15)
    t.join(5)
    assert sent.reply is not None, sent.raw
    assert sent.reply.data == "42" and sent.reply.from_ == b.key
    assert sent.reply.in_reply_to == sent.id


def test_a_binary_message_round_trips(pair):
    a, b = pair
    needs(a, "/v1/messages/{id}/reply")
    blob = bytes(range(256))
    sent = a.client.send_message("sdk-b", blob)
    got = wait_until(15, lambda: next((m for m in b.client.inbox().messages if m.id == sent.id),
                                      None), 0.1)
    assert got is not None and got.type == "binary" and got.payload() == blob
    one = b.client.message(sent.id)
    assert one.id == sent.id


def test_send_file_arrives_in_the_peers_received_files(pair, tmp_path):
    a, b = pair
    needs(a, "/v1/files")
    src = Path(tmp_path, "report.bin")
    data = bytes(range(256)) * 4096
    src.write_bytes(data)
    tr = a.client.send_file("sdk-b", src, name="report.bin")
    assert tr.raw, tr
    got = wait_until(30, lambda: next((f for f in b.client.received()
                                       if (f.name or "").endswith("report.bin")), None), 0.2)
    assert got is not None, b.client.received()
    assert got.from_ == a.key and got.size == len(data)
    assert Path(got.path).read_bytes() == data
    assert got.sha256 == hashlib.sha256(data).hexdigest()
    assert any(t.name == "report.bin" and t.direction == "outgoing" for t in a.client.transfers())
    b.client.clear_received()
    assert not any((f.name or "").endswith("report.bin") for f in b.client.received())
    # With wait: one call that returns once the peer holds the file, verified.
    done = a.client.send_file("sdk-b", src, name="again.bin", wait=30)
    assert done.state == "done" and done.stored_as == "again.bin", done
    assert any(f.name == "again.bin" for f in b.client.received())


def test_publish_reaches_a_subscriber(pair):
    a, b = pair
    needs(a, "/v1/pubsub/publish")

    async def go():
        async with AsyncClient(home=b.home) as cb, AsyncClient(home=a.home) as ca:
            async with cb.subscribe("jobs.done") as sub:
                async def first():
                    async for e in sub:
                        if e.topic == "jobs.done" and contains(e.data, {"job": 7}):
                            return e
                task = asyncio.ensure_future(first())
                for _ in range(50):
                    await ca.publish("jobs.done", {"job": 7}, peer="sdk-b")
                    done, _ = await asyncio.wait({task}, timeout=0.3)
                    if done:
                        return task.result()
                task.cancel()
                return None

    e = asyncio.run(go())
    assert e is not None, "no pub/sub event arrived"
    assert e.type == "pubsub_event" and e.publisher == a.key and e.seq >= 1


def test_a_task_is_submitted_accepted_answered_and_waited_for(pair):
    a, b = pair
    needs(a, "/v1/tasks")
    t = a.client.submit_task("sdk-b", {"op": "sum", "args": [1, 2]}, deadline=60)
    assert t.id
    assert t.state == "NEW" and t.role == "submitter", t.raw
    got = wait_until(15, lambda: next((x for x in b.client.tasks(submitted=False)
                                       if x.id == t.id), None), 0.1)
    assert got is not None and got.task == {"op": "sum", "args": [1, 2]}
    assert got.role == "worker" and got.submitter == a.key
    assert b.client.accept_task(t.id).state == "ACCEPTED"
    b.client.task_result(t.id, {"sum": 3})
    done = a.client.wait_task(t.id, 15)
    assert done.state == "DONE" and done.final, done.raw
    assert done.result_data() == {"sum": 3}
    assert any(x.id == t.id for x in a.client.tasks(submitted=True))
    assert a.client.task(t.id).id == t.id


def test_a_declined_task_says_why(pair):
    a, b = pair
    needs(a, "/v1/tasks")
    t = a.client.submit_task("sdk-b", {"op": "nope"})
    assert wait_until(15, lambda: any(x.id == t.id for x in b.client.tasks()), 0.1)
    b.client.decline_task(t.id, "cannot do that")
    done = a.client.wait_task(t.id, 15)
    assert done.state == "DECLINED" and done.reason == "cannot do that", done.raw


def test_the_example_swarm_gathers_results_from_two_workers(pair, node_factory):
    a, b = pair
    needs(a, "/v1/tasks")
    from conftest import make_trusted
    c = node_factory("sdk-worker-c")
    make_trusted(a, c)
    spec = importlib.util.spec_from_file_location("swarm", REPO / "examples/python/swarm.py")
    swarm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(swarm)
    stop = threading.Event()
    workers = [threading.Thread(target=swarm.worker, args=(n.client, 60, stop), daemon=True)
               for n in (b, c)]
    for w in workers:
        w.start()
    try:
        out = swarm.orchestrate(a.client, ["sdk-b", "sdk-worker-c"], list(range(1, 101)))
    finally:
        stop.set()
        for w in workers:
            w.join(5)
    assert out["total"] == sum(n * n for n in range(1, 101))
    assert set(out["parts"]) == {"sdk-b", "sdk-worker-c"}
