"""``pilotctl mcp`` driven by an independent client, the official Python MCP SDK: it lists
the tools, sends a message from one daemon to another through a tool call, reads the
daemon's errors as tool errors (code, message, hint), and finds the trust decisions
(approve, reject) hidden and refused unless the operator allows them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from conftest import wait_until


def f(obj, snake):
    """A field of an MCP SDK object: snake_case in mcp 2, camelCase in mcp 1."""
    if hasattr(obj, snake):
        return getattr(obj, snake)
    head, *rest = snake.split("_")
    return getattr(obj, head + "".join(w.title() for w in rest))


async def session_run(node, body, *extra_args):
    params = StdioServerParameters(command=node.bin, args=["mcp", *extra_args], env=node.env())
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            assert f(init, "server_info").name == "pilot"
            return await asyncio.wait_for(body(session), 60)


def test_a_model_client_lists_the_tools_and_sends_a_message(pair):
    a, b = pair

    async def body(s):
        tools = {t.name: t for t in (await s.list_tools()).tools}
        info = await s.call_tool("info", {})
        sent = await s.call_tool("send_message", {"peer": "sdk-b", "data": "hello from a model"})
        inbox = await s.call_tool("inbox", {"from": "sdk-a", "limit": 100})
        return tools, info, sent, inbox

    tools, info, sent, inbox = asyncio.run(session_run(a, body))
    for name in ["info", "peers", "find", "handshake", "pending", "send_message", "inbox", "reply",
                 "publish", "send_file", "task_submit", "task_status", "task_result"]:
        assert name in tools, f"{name} missing: {sorted(tools)}"
        assert f(tools[name], "input_schema")["type"] == "object"
        assert len(tools[name].description) > 40
    assert "wait_seconds" in f(tools["send_message"], "input_schema")["properties"]
    assert f(tools["send_message"], "input_schema")["required"] == ["peer", "data"]
    assert not f(info, "is_error") and f(info, "structured_content")["public_key"] == a.key
    assert not f(sent, "is_error"), sent
    msg = f(sent, "structured_content")
    assert msg["to"] == b.key and msg["status"] in ("delivered", "queued")
    got = wait_until(15, lambda: next((m for m in b.client.inbox().messages if m.id == msg["id"]),
                                      None), 0.1)
    assert got is not None and got.data == "hello from a model" and got.from_ == a.key
    assert not f(inbox, "is_error") and "messages" in f(inbox, "structured_content")


def test_daemon_errors_are_tool_errors_with_code_and_hint(pair):
    a, _ = pair

    async def body(s):
        return await s.call_tool("find", {"hostname": "no-such-node"})

    r = asyncio.run(session_run(a, body))
    assert f(r, "is_error")
    assert f(r, "structured_content")["code"] == "not_found"
    assert f(r, "structured_content")["message"] and f(r, "structured_content")["hint"]


def test_trust_decisions_are_refused_by_default(pair, node_factory):
    a, _ = pair
    c = node_factory("sdk-mcp-c")
    assert wait_until(10, lambda: _asked(c, "sdk-a"), 0.2)
    assert wait_until(10, lambda: any(p.public_key == c.key for p in a.client.pending()), 0.1)

    async def body(s):
        names = {t.name for t in (await s.list_tools()).tools}
        approve = await s.call_tool("approve", {"peer": c.key})
        reject = await s.call_tool("reject", {"peer": c.key})
        return names, approve, reject

    names, approve, reject = asyncio.run(session_run(a, body))
    assert "approve" not in names and "reject" not in names
    for r in (approve, reject):
        assert f(r, "is_error")
        assert f(r, "structured_content")["code"] == "unauthorized"
        assert "allow_trust_decisions" in f(r, "structured_content")["hint"]
    # Nothing changed: the stranger still waits.
    assert any(p.public_key == c.key and p.state == "pending" for p in a.client.pending())


def test_the_operator_can_allow_trust_decisions(pair, node_factory, tmp_path):
    a, _ = pair
    c = node_factory("sdk-mcp-d")
    assert wait_until(10, lambda: _asked(c, "sdk-a"), 0.2)
    assert wait_until(10, lambda: any(p.public_key == c.key for p in a.client.pending()), 0.1)
    cfg = Path(tmp_path, "mcp.toml")
    cfg.write_text("[mcp]\nallow_trust_decisions = true\n")
    cfg.chmod(0o600)

    async def body(s):
        names = {t.name for t in (await s.list_tools()).tools}
        return names, await s.call_tool("reject", {"peer": c.key, "reason": "not now"})

    names, r = asyncio.run(session_run(a, body, "--config", str(cfg)))
    assert "approve" in names and "reject" in names
    assert not f(r, "is_error"), r
    assert f(r, "structured_content")["state"] == "rejected"


def _asked(node, peer):
    from pilot_agent import NotFound
    try:
        node.client.handshake(peer, "mcp test")
        return True
    except NotFound:
        return False
