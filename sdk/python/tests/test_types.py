"""The SDK's dataclasses match the daemon's OpenAPI document (docs/api/openapi.json): every
property of each answer's schema is a field (``from`` is ``from_``), so a field the daemon
adds fails here until the SDK names it. No daemon needed."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from conftest import REPO
from pilot_agent import types as t
from pilot_agent._wire import SseParser
from pilot_agent.errors import NotFound, PilotError, parse_envelope

SCHEMAS = json.loads((REPO / "docs/api/openapi.json").read_text())["components"]["schemas"]

PAIRS = [
    (t.Info, "InfoData"), (t.Peers, "PeersData"), (t.Peer, "PeerStatus"),
    (t.TrustView, "TrustView"), (t.PendingRequest, "PendingView"), (t.Lookup, "Lookup"),
    (t.PingReport, "PingReport"), (t.Message, "InboxEntry"), (t.Inbox, "InboxData"),
    (t.SentMessage, "SentMessage"), (t.OutboxEntry, "OutboxEntry"),
    (t.ConnectInfo, "ConnectData"), (t.ListenInfo, "ListenData"),
    # The services' answers.
    (t.Transfer, "Transfer"), (t.ReceivedFile, "ReceivedFile"), (t.Task, "TaskView"),
    (t.Published, "PublishedData"), (t.Webhook, "WebhookStatus"),
]


def properties(schema: dict) -> set:
    props = set(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        ref = part.get("$ref")
        props |= properties(SCHEMAS[ref.rsplit("/", 1)[1]] if ref else part)
    return props


@pytest.mark.parametrize("cls,name", PAIRS, ids=[n for _, n in PAIRS])
def test_every_schema_property_is_a_field(cls, name):
    assert name in SCHEMAS, f"{name} is not in docs/api/openapi.json"
    have = {f.name for f in fields(cls)}
    want = {cls._renames.get(p, p) for p in properties(SCHEMAS[name])}
    assert want - have == set(), f"{cls.__name__} lacks {sorted(want - have)} of {name}"


def test_answers_are_built_from_json_and_keep_what_they_do_not_name():
    m = t.Message.from_dict({"id": "1", "from": "k", "type": "binary", "data": "AAE=", "new": 1})
    assert m.from_ == "k" and m.payload() == b"\x00\x01" and m.raw["new"] == 1
    p = t.Peers.from_dict({"peers": [{"public_key": "k", "path": "direct"}], "counters": None})
    assert isinstance(p.peers[0], t.Peer) and p.peers[0].path == "direct"
    assert t.list_of(t.Task, {"tasks": [{"id": "a"}]}, "tasks")[0].id == "a"
    assert t.list_of(t.Task, [{"id": "b"}], "tasks")[0].id == "b"
    task = t.Task.from_dict({"id": "c", "state": "DONE", "result": {"data": '{"sum": 3}'}})
    assert task.final and task.result_data() == {"sum": 3}
    ev = t.PubSubEvent.from_dict({"type": "pubsub_event", "broker": "k",
                                  "event": {"topic": "a.b", "seq": 4, "data": "x"}})
    assert (ev.topic, ev.seq, ev.data) == ("a.b", 4, "x")


def test_an_error_envelope_raises_its_code_message_and_hint():
    with pytest.raises(NotFound) as e:
        parse_envelope(404, b'{"status":"error","code":"not_found","message":"m","hint":"h"}')
    assert (e.value.code, e.value.message, e.value.hint, e.value.status) == ("not_found", "m", "h", 404)
    with pytest.raises(PilotError) as e:
        parse_envelope(500, b"not json")
    assert e.value.code == "internal"


def test_server_sent_events_are_split_on_blank_lines():
    p = SseParser()
    got = [p.feed(line) for line in [": pilot events v1", "", "event: lagged", 'data: {"type":',
                                     'data: "lagged","missed":2}', ""]]
    assert got[-1] == {"type": "lagged", "missed": 2}
    assert got[:-1] == [None] * 5
