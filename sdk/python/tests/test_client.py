"""The SDK against real daemons: a loopback registry and two userspace daemons that trust
each other (made by the SDK's handshake, pending and approve; see conftest.py)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from conftest import wait_until
from pilot_agent import (AsyncClient, Client, Event, Message, NotFound, NotRunning, PilotError,
                         default_socket)


def inbox_message(node, pred):
    """The first message in ``node``'s inbox matching ``pred``, waited for."""
    return wait_until(15, lambda: next((m for m in node.client.inbox().messages if pred(m)), None),
                      0.1)


def test_info_is_typed_and_names_this_node(pair):
    a, _ = pair
    info = a.client.info()
    assert info.hostname == "sdk-a"
    assert info.mode == "userspace"
    assert info.public_key == a.key and len(info.public_key) == 44
    assert info.address.count(".") == 2
    assert info.raw["pid"] == info.pid


def test_async_client_has_the_same_answers(pair):
    a, b = pair

    async def go():
        async with AsyncClient(home=a.home) as c:
            info = await c.info()
            found = await c.find("sdk-b")
            trust = await c.trust()
            return info, found, trust

    info, found, trust = asyncio.run(go())
    assert info.public_key == a.key
    assert found.public_key == b.key and found.hostname == "sdk-b"
    assert any(t.public_key == b.key and t.state == "trusted" for t in trust)


def test_the_socket_is_found_as_pilotctl_finds_it(pair, monkeypatch, tmp_path):
    a, _ = pair
    monkeypatch.delenv("PILOT_SOCKET", raising=False)
    monkeypatch.setenv("PILOT_HOME", a.home)
    assert default_socket() == a.socket
    assert Client().info().public_key == a.key
    monkeypatch.setenv("PILOT_HOME", str(tmp_path))
    monkeypatch.setenv("PILOT_SOCKET", a.socket)
    assert Client().info().public_key == a.key
    monkeypatch.delenv("PILOT_SOCKET")
    monkeypatch.delenv("PILOT_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_socket() == str(tmp_path / ".pilot" / "pilot.sock")


def test_no_daemon_raises_not_running_with_a_hint(tmp_path):
    with pytest.raises(NotRunning) as e:
        Client(home=tmp_path).info()
    assert e.value.code == "not_running"
    assert "pilotctl daemon start" in e.value.hint

    async def go():
        await AsyncClient(home=tmp_path).peers()

    with pytest.raises(NotRunning):
        asyncio.run(go())


def test_an_unknown_name_raises_the_daemons_error(pair):
    a, _ = pair
    with pytest.raises(NotFound) as e:
        a.client.find("no-such-node")
    assert e.value.code == "not_found"
    assert e.value.status == 404
    assert e.value.message and e.value.hint
    with pytest.raises(PilotError) as e:
        a.client.handshake("Not A Name!")
    assert e.value.code == "invalid_argument", e.value


def test_trust_was_made_by_handshake_pending_and_approve(pair):
    a, b = pair
    assert any(t.public_key == a.key and t.state == "trusted" for t in b.client.trust())
    assert not any(p.public_key == a.key for p in b.client.pending())
    assert wait_until(10, lambda: any(p.public_key == b.key for p in a.client.peers().peers))


def test_reject_refuses_a_pending_request(pair, node_factory):
    a, _ = pair
    c = node_factory("sdk-c")
    assert wait_until(10, lambda: _try(lambda: c.client.handshake("sdk-a", "let me in")), 0.2)
    pend = wait_until(10, lambda: [p for p in a.client.pending() if p.public_key == c.key], 0.1)
    assert pend and pend[0].justification == "let me in" and pend[0].hostname == "sdk-c"
    view = a.client.reject(c.key, "not today")
    assert view.state == "rejected", view
    assert not any(p.public_key == c.key for p in a.client.pending())


def _try(f):
    try:
        f()
        return True
    except NotFound:
        return False


def test_a_text_and_a_json_message_reach_the_peers_inbox(pair):
    a, b = pair
    sent = a.client.send_message("sdk-b", "hello b")
    assert sent.status in ("delivered", "queued"), sent
    assert sent.to == b.key and sent.id
    got = inbox_message(b, lambda m: m.id == sent.id)
    assert isinstance(got, Message)
    assert got.type == "text" and got.data == "hello b"
    assert got.from_ == a.key and got.from_hostname == "sdk-a"
    sent = a.client.send_message("sdk-b", {"job": 42, "args": ["x"]})
    got = inbox_message(b, lambda m: m.id == sent.id)
    assert got.type == "json" and got.payload() == {"job": 42, "args": ["x"]}
    assert isinstance(a.client.outbox(), list)


def test_async_events_carry_a_message_as_it_arrives(pair):
    a, b = pair

    async def go():
        async with AsyncClient(home=b.home) as cb, AsyncClient(home=a.home) as ca:
            async with cb.events() as events:
                sent = await ca.send_message("sdk-b", {"event": True})

                async def first():
                    async for e in events:
                        if e.type == "message_received" and e.message.id == sent.id:
                            return e
                return await asyncio.wait_for(first(), 15)

    e = asyncio.run(go())
    assert isinstance(e, Event)
    assert e.message.from_ == a.key and e.message.payload() == {"event": True}
    assert e["type"] == "message_received"


def test_the_sync_message_iterator_yields_new_messages(pair):
    a, b = pair
    got = []

    def read():
        for m in b.client.messages():
            if m.data == "via iterator":
                got.append(m)
                return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    a.client.send_message("sdk-b", "via iterator")
    t.join(15)
    assert got and got[0].from_ == a.key


def test_connect_streams_bytes_to_the_peers_echo_port(pair):
    a, b = pair
    with a.client.connect("sdk-b", 7) as s:
        assert s.info.peer == b.key and s.info.port == 7
        data = bytes(range(256)) * 512
        s.write(data)
        s.shutdown_write()
        assert s.read() == data


def test_async_connect_is_a_reader_writer_pair(pair):
    a, _ = pair

    async def go():
        async with AsyncClient(home=a.home) as c:
            reader, writer = await c.connect("sdk-b", 7)
            writer.write(b"async echo")
            writer.write_eof()
            back = await asyncio.wait_for(reader.read(), 15)
            writer.close()
            return back

    assert asyncio.run(go()) == b"async echo"


def test_listen_accepts_a_peer_that_connects(pair):
    a, b = pair
    result = {}

    def serve():
        with b.client.listen(5100, timeout=20) as s:
            result["info"] = s.info
            result["got"] = s.read(4)
            s.write(b"pong")

    t = threading.Thread(target=serve, daemon=True)
    t.start()

    def dial():
        try:
            return a.client.connect("sdk-b", 5100)
        except PilotError:
            return None

    s = wait_until(10, dial, 0.2)
    assert s is not None, "could not connect to the listening port"
    with s:
        s.write(b"ping")
        assert s.read(4) == b"pong"
    t.join(10)
    assert result["got"] == b"ping"
    assert result["info"].peer == a.key and result["info"].port == 5100


def test_async_listen_and_connect(pair):
    a, b = pair

    async def go():
        async with AsyncClient(home=a.home) as ca, AsyncClient(home=b.home) as cb:
            server = asyncio.ensure_future(cb.listen(5101, timeout=20))
            for _ in range(50):
                try:
                    client = await ca.connect("sdk-b", 5101)
                    break
                except PilotError:
                    await asyncio.sleep(0.2)
            else:
                raise AssertionError("could not connect")
            accepted = await asyncio.wait_for(server, 15)
            client.writer.write(b"hi")
            await client.writer.drain()
            got = await accepted.reader.readexactly(2)
            await client.close()
            await accepted.close()
            return accepted.info, got

    info, got = asyncio.run(go())
    assert got == b"hi" and info.peer == a.key


def test_a_stream_to_an_unknown_peer_raises_with_code_and_hint(pair):
    a, _ = pair
    with pytest.raises(PilotError) as e:
        a.client.connect("no-such-node", 7)
    assert e.value.code in ("not_found", "connection_failed", "unauthorized"), e.value
    assert e.value.hint


def test_ping_reports_the_path(pair):
    a, b = pair
    r = a.client.ping("sdk-b", 2)
    assert r.peer == b.key and r.sent == 2 and r.path in ("direct", "relay")


def test_the_async_message_iterator_yields_new_messages(pair):
    a, b = pair

    async def go():
        async with AsyncClient(home=b.home) as cb:
            async def first():
                async for m in cb.messages():
                    if m.data == "async iterator":
                        return m
            reader = asyncio.ensure_future(first())
            await asyncio.sleep(0.5)
            a.client.send_message("sdk-b", "async iterator")
            return await asyncio.wait_for(reader, 15)

    m = asyncio.run(go())
    assert m.from_ == a.key


def test_untrust_withdraws_trust(pair, node_factory):
    from conftest import make_trusted
    a, _ = pair
    c = node_factory("sdk-untrust")
    make_trusted(c, a)
    view = a.client.untrust(c.key)
    assert view is None or view.state != "trusted", view
    assert not any(x.public_key == c.key and x.state == "trusted" for x in a.client.trust())
