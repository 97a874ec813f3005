#!/usr/bin/env python3
"""Writes the small seed corpora in fuzz/corpus/TARGET/: one valid message of each kind.

Run from anywhere: python3 fuzz/seeds.py (needs the `cryptography` package). Keys are the
targets' fixed identities, `Identity::from_seed([k; 32])`: nodes 1 and 2, the fuzz identity 7,
"me" 8 (trust_message), the registry 9. Requests are signed by their sender, responses by the
registry, probes by their sender, as on the wire.
"""
import json
import os
import struct

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def ident(k):
    return Ed25519PrivateKey.from_private_bytes(bytes([k]) * 32)


def pub(k):
    return ident(k).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign(k, domain, msg):
    return msg + ident(k).sign(domain + msg)


REQ_DOMAIN = b"pilot/control/v1\0"
RESP_DOMAIN = b"pilot/registry/v1\0"
PROBE_DOMAIN = b"pilot/probe/v1\0"

HERE = os.path.dirname(os.path.abspath(__file__))
K1 = pub(1)
K2 = pub(2)
ME = pub(8)
NONCE = bytes(range(16))
NOW = 1_750_000_000_000
P = b"P\x01"


def u16(n):
    return struct.pack(">H", n)


def u64(n):
    return struct.pack(">Q", n)


def host(name):
    return bytes([len(name)]) + name.encode()


def text(s):
    return u16(len(s.encode())) + s.encode()


def addr4(a, port):
    return b"\x04" + bytes(a) + u16(port)


def addr6(port):
    return b"\x06" + bytes.fromhex("20010db8000000000000000000000001") + u16(port)


def addrs(*xs):
    return bytes([len(xs)]) + b"".join(xs)


def request(ty, body, sender=1, ts=NOW):
    return sign(sender, REQ_DOMAIN, P + bytes([ty]) + pub(sender) + NONCE + u64(ts) + body)


REQUESTS = {
    "register": request(1, host("worker-1") + addrs(addr4([10, 0, 0, 2], 51820), addr6(51820))),
    "register_anon": request(1, b"\x00" + addrs()),
    "heartbeat": request(2, b""),
    "set_hostname": request(3, host("alice")),
    "release_hostname": request(4, b""),
    "lookup": request(5, host("bob")),
    "trust_request": request(6, K2 + text("let me in")),
    "trust_response": request(7, K2 + NONCE + b"\x01" + text("ok")),
    "endpoint_request": request(8, K2 + addrs(addr4([192, 168, 1, 5], 4000))),
    "endpoint_response": request(9, K2 + NONCE + addrs(addr6(9))),
    # v1.4: the sender's home relay, an optional trailing addr.
    "endpoint_request_home": request(8, K2 + addrs() + addr4([203, 0, 113, 10], 7946)),
    "endpoint_response_home": request(9, K2 + NONCE + addrs(addr6(9)) + addr6(7946)),
    "delivered": request(10, b"\x02" + NONCE + bytes(16)),
}


def response(ty, body):
    return sign(9, RESP_DOMAIN, P + bytes([ty]) + NONCE + body)


RESPONSES = {
    "registered": response(0x80, addr4([198, 51, 100, 1], 40000) + b"\x01" + K2),
    "ack": response(0x81, addr6(7)),
    "error": response(0x82, b"\x03" + u64(NOW) + text("stale timestamp")),
    "lookup_result": response(0x83, host("bob") + K2 + bytes([1, 2, 3, 4, 5, 6])),
    "push_trust_request": response(0x84, host("alice") + u16(len(REQUESTS["trust_request"]))
                                   + REQUESTS["trust_request"]),
    "push_trust_response": response(0x85, b"\x00" + u16(len(REQUESTS["trust_response"]))
                                    + REQUESTS["trust_response"]),
    "push_endpoint_request": response(0x86, addr4([203, 0, 113, 7], 5555)
                                      + u16(len(REQUESTS["endpoint_request"]))
                                      + REQUESTS["endpoint_request"]),
    "endpoint_info": response(0x87, addr6(51820) + u16(len(REQUESTS["endpoint_response"]))
                              + REQUESTS["endpoint_response"]),
    "endpoint_info_home": response(0x87, addr6(51820)
                                   + u16(len(REQUESTS["endpoint_response_home"]))
                                   + REQUESTS["endpoint_response_home"]),
}

PROBE = sign(1, PROBE_DOMAIN, P + b"\x30" + K1 + K2 + u64(77) + u64(NOW))
PROBE_REPLY = sign(2, PROBE_DOMAIN, P + b"\x31" + K2 + K1 + u64(77) + u64(NOW))
WG_INIT = b"\x01\x00\x00\x00" + bytes(144)
WG_DATA = b"\x04\x00\x00\x00" + bytes(12) + bytes(32)
A48 = bytes([1, 2, 3, 4, 5, 6])


def relay(kind, payload):
    return P + bytes([kind]) + A48 + payload


def http(method, path, body=None):
    head = f"{method} {path} HTTP/1.1\r\nhost: localhost\r\n"
    if body is None:
        return (head + "\r\n").encode()
    b = json.dumps(body).encode()
    return (head + f"content-type: application/json\r\ncontent-length: {len(b)}\r\n\r\n").encode() + b


def frame(obj):
    b = json.dumps(obj).encode()
    return struct.pack(">I", len(b)) + b


def base64_key(k):
    import base64
    return base64.b64encode(pub(k)).decode()


def record(op, source, signer, stamp, data):
    return bytes([op, source, signer, stamp]) + struct.pack("<H", len(data)) + data


MSG = {"v": 1, "id": "0123456789abcdef0123456789abcdef", "type": "json",
       "data": {"task": "summarise", "n": 3, "ok": True, "x": [1.5, None]}, "sent_ms": NOW}

FILE_OFFER = {"v": 1, "id": "0123456789abcdef0123456789abcdef", "name": "a.txt", "size": 5,
              "sha256": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"}


def file_frame(kind, payload):
    """A file-service frame (port 1004): kind, 4-byte big-endian length, payload (JSON for
    control frames)."""
    if isinstance(payload, dict):
        payload = json.dumps(payload, separators=(",", ":")).encode()
    return bytes([kind]) + struct.pack(">I", len(payload)) + payload
TASK_ID = "0123456789abcdef0123456789abcdef"
TASK_DEADLINE = NOW + 3_600_000
TASK_STATES = {"NEW": 1, "ACCEPTED": 2, "DECLINED": 3, "DONE": 4, "FAILED": 5, "EXPIRED": 6}


def task_record(state, signer, payload, t):
    """A task state frame signed as src/services/tasks/record.rs lays it out."""
    import base64
    import hashlib
    h = hashlib.sha256(payload.encode()).digest()
    signed = (b"pilot task state v1\0" + TASK_ID.encode() + K1 + K2 + pub(signer)
              + bytes([TASK_STATES[state]]) + h + struct.pack(">QQ", t, TASK_DEADLINE))
    b64 = lambda b: base64.b64encode(b).decode()
    rec = {"task_id": TASK_ID, "submitter": b64(K1), "worker": b64(K2), "state": state,
           "hash": h.hex(), "time_ms": t, "deadline_ms": TASK_DEADLINE, "signer": b64(pub(signer)),
           "sig": b64(ident(signer).sign(signed))}
    return frame({"v": 1, "op": "state", "record": rec, "payload": payload})


SEEDS = {
    "pubsub": {
        "subscribe_publish": frame({"v": 1, "op": "subscribe", "topic": "sensors.*.temp"})
        + frame({"v": 1, "op": "subscribe", "topic": "jobs.>"})
        + frame({"v": 1, "op": "publish", "topic": "sensors.kitchen.temp", "data": "21.5"})
        + frame({"v": 1, "op": "publish", "topic": "jobs.new.urgent", "data": "x"}),
        "event": frame({"v": 1, "op": "event", "publisher": base64_key(1), "topic": "a.b",
                        "seq": 7, "ts_ms": NOW, "data": "hi"}),
        "error": frame({"v": 1, "op": "error", "code": "bad_topic", "message": "m"}),
    },
    "tasks": {
        "lifecycle": task_record("NEW", 1, '{"task":{"op":"x"}}', NOW)
        + task_record("ACCEPTED", 2, "", NOW + 1)
        + task_record("DONE", 2, '{"data":"42"}', NOW + 2),
        "declined": task_record("NEW", 1, '{"task":1}', NOW) + task_record("DECLINED", 2, "busy", NOW + 1),
        "forged": task_record("NEW", 1, '{"task":1}', NOW) + task_record("ACCEPTED", 2, "", NOW + 1)
        + task_record("DONE", 3, '{"data":"forged"}', NOW + 2),
        "ack": frame({"v": 1, "op": "ack", "task_id": TASK_ID, "state": "DONE"}),
    },
    "classify": {
        "wg_init": WG_INIT, "wg_data": WG_DATA, "probe": PROBE, "control": REQUESTS["heartbeat"],
        "response": RESPONSES["ack"], "relay_wg": relay(0xC0, WG_DATA),
        "relay_probe": relay(0xC0, PROBE), "relay_send": relay(0x40, WG_DATA),
    },
    "registry_request": REQUESTS,
    "registry_response": RESPONSES,
    "probe": {"probe": PROBE, "reply": PROBE_REPLY},
    "relay": {"send": relay(0x40, WG_DATA), "deliver": relay(0xC0, PROBE)},
    "trust_message": {
        "request": u64(NOW) + request(6, ME + text("let me in")),
        "response": u64(NOW) + request(7, ME + NONCE + b"\x01" + text("ok"), sender=2),
        "revoke": u64(NOW) + request(7, ME + bytes(16) + b"\x02" + text("")),
        "stale": u64(NOW * 2) + request(6, ME + text("old")),
    },
    "socks5": {
        "greeting": b"\x05\x02\x00\x02",
        "connect_v6": b"\x05\x01\x00\x04" + bytes.fromhex("fdc57a3e91b40000000000000001") + bytes(2) + u16(80),
        "connect_name": b"\x05\x01\x00\x03" + host("worker-node.pilot") + u16(8080),
        "connect_addr48": b"\x05\x01\x00\x03" + host("1a2b.3c4d.5e6f") + u16(22),
        "connect_v4": b"\x05\x01\x00\x01\x7f\x00\x00\x01" + u16(80),
        "udp": b"\x05\x03\x00\x01" + bytes(6),
    },
    "api_json": {
        "hostname": b"\x00" + json.dumps({"hostname": "alice"}).encode(),
        "handshake": b"\x01" + json.dumps({"peer": "bob", "justification": "hi"}).encode(),
        "peer": b"\x02" + json.dumps({"peer": "1a2b.3c4d.5e6f"}).encode(),
        "reject": b"\x03" + json.dumps({"peer": "bob", "reason": None}).encode(),
        "ping": b"\x04" + json.dumps({"peer": "bob", "count": 4}).encode(),
        "send": b"\x05" + json.dumps({"peer": "bob", "data": "{\"a\":1}", "type": "json"}).encode(),
        "expose": b"\x06" + json.dumps({"port": 80, "to": "127.0.0.1:3000"}).encode(),
        "inbox": b"\x07clear=true",
        "connect": b"\x08peer=bob&port=80",
        "listen": b"\x09port=8080",
    },
    "api_http": {
        "info": http("GET", "/v1/info"),
        "peers": http("GET", "/v1/peers"),
        "hostname": http("PUT", "/v1/hostname", {"hostname": "alice"}),
        "handshake": http("POST", "/v1/trust/handshake", {"peer": "bob", "justification": "hi"}),
        "approve": http("POST", "/v1/trust/approve", {"peer": "bob"}),
        "reject": http("POST", "/v1/trust/reject", {"peer": "bob", "reason": "no"}),
        "find": http("GET", "/v1/find/bob"),
        "ping": http("POST", "/v1/ping", {"peer": "bob", "count": 2}),
        "send": http("POST", "/v1/messages", {"peer": "bob", "data": "hi", "type": "text"}),
        "inbox": http("GET", "/v1/messages/inbox?clear=false"),
        "expose": http("POST", "/v1/expose", {"port": 80, "to": "127.0.0.1:3000"}),
        "expose_remove": http("DELETE", "/v1/expose/80"),
        "connect": b"POST /v1/connect?peer=bob&port=80 HTTP/1.1\r\nhost: x\r\n"
                   b"connection: upgrade\r\nupgrade: pilot-stream\r\n\r\n",
        "events": http("GET", "/v1/events"),
        "two": http("GET", "/v1/trust") + http("POST", "/v1/shutdown"),
    },
    "messages": {
        "one": frame(MSG),
        "two": frame(MSG) + frame(dict(MSG, type="text", data="hello")),
        "ack": frame({"v": 1, "ack": MSG["id"]}),
    },
    "files": {
        "offer_data": file_frame(1, FILE_OFFER) + file_frame(4, b"hello") + file_frame(4, b""),
        "replies": file_frame(2, {"v": 1, "id": FILE_OFFER["id"], "offset": 5})
        + file_frame(6, {"v": 1, "id": FILE_OFFER["id"], "offset": 5})
        + file_frame(5, {"v": 1, "id": FILE_OFFER["id"], "stored_as": "a.txt", "sha256": "0" * 64}),
        "refuse": file_frame(3, {"v": 1, "id": FILE_OFFER["id"], "code": "too_large", "message": "no"}),
    },
    "config": {
        "empty": b"",
        "small": b'hostname = "alice"\nmode = "userspace"\nregistries = ["198.51.100.1:9000"]\n'
                 b'[socks5]\nlisten = "127.0.0.1:1080"\n[[expose]]\nport = 80\nto = "127.0.0.1:3000"\n'
                 b'[[peer]]\npublic_key = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="\n'
                 b'endpoint = "198.51.100.2:51820"\n',
    },
    "registry_server": {
        "register_then_trust": record(1, 0, 1, 0, REQUESTS["register"])
        + record(1, 1, 2, 0, REQUESTS["register_anon"])
        + record(1, 0, 1, 1, request(6, K2 + text("hi")))
        + record(0, 0, 0, 30, b"")
        + record(1, 1, 2, 0, REQUESTS["heartbeat"]),
        "lookup": record(1, 0, 1, 0, REQUESTS["register"]) + record(1, 2, 3, 0, REQUESTS["lookup"]),
        "relay": record(1, 0, 1, 0, REQUESTS["register"]) + record(1, 0, 0, 0, relay(0x40, WG_DATA)),
    },
}


def tcp6(seq, payload, flags=0x10, sport=4000):
    """An IPv6 TCP segment with timestamps (checksum left zero: the stack does not verify it)."""
    tcp = (u16(sport) + u16(80) + struct.pack(">II", seq, 7777) + bytes([8 << 4, flags])
           + u16(500) + bytes(4) + bytes([1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 3]))
    src = bytes([0xfd, 0xc5]) + bytes(13) + b"\x0a"
    dst = bytes([0xfd, 0xc5]) + bytes(13) + b"\x0b"
    return bytes([0x60, 0, 0, 0]) + u16(len(tcp) + len(payload)) + bytes([6, 64]) + src + dst + tcp + payload


def batch(*packets):
    return b"".join(u16(len(p)) + p for p in packets)


SEEDS["tcp_offload"] = {
    "run": batch(tcp6(1, b"a" * 1000), tcp6(1001, b"b" * 1000), tcp6(2001, b"c" * 500, flags=0x18)),
    "two_flows": batch(tcp6(1, b"a" * 100), tcp6(9, b"x" * 100, sport=4001), tcp6(101, b"b" * 100)),
    "large": batch(tcp6(1, b"z" * 3000)),
}


def main():
    with open(os.path.join(HERE, "..", "config", "pilot.toml"), "rb") as f:
        SEEDS["config"]["reference"] = f.read()
    for target, seeds in SEEDS.items():
        d = os.path.join(HERE, "corpus", target)
        os.makedirs(d, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
