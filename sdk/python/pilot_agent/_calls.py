"""Each API operation once, as a :class:`Call` (method, path, query, body, how to read the
answer); :class:`~pilot_agent.Client` and :class:`~pilot_agent.AsyncClient` only send them."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import quote

from . import types as t


def _seg(s: str) -> str:
    """Percent-encodes a path segment (everything but RFC 3986's unreserved characters)."""
    return quote(str(s), safe="-._~")


@dataclass
class Call:
    """One HTTP request of the local API and the parser of its ``data``."""

    method: str
    path: str
    params: Optional[Dict[str, Any]] = None
    body: Optional[Dict[str, Any]] = None
    parse: Callable[[Any], Any] = lambda d: d
    #: Extra seconds on top of the client's timeout (``wait=`` calls).
    extra_timeout: float = 0.0


def _params(**kw: Any) -> Optional[Dict[str, Any]]:
    """Query parameters without the ``None`` ones (booleans as ``true``/``false``)."""
    out = {k.rstrip("_"): ("true" if v is True else "false" if v is False else v)
           for k, v in kw.items() if v is not None}
    return out or None


def _body(**kw: Any) -> Dict[str, Any]:
    """A JSON body without the ``None`` fields (the daemon refuses unknown fields, so an
    optional field is only sent when used)."""
    return {k: v for k, v in kw.items() if v is not None}


def encode_payload(data: Any, kind: Optional[str]) -> Tuple[str, str]:
    """``(data, kind)`` for the wire: ``str`` is text, ``bytes`` binary (base64), anything
    else JSON; an explicit ``kind`` wins."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(data)).decode(), kind or "binary"
    if isinstance(data, str):
        return data, kind or "text"
    return json.dumps(data), kind or "json"


def _ms(seconds: Optional[float]) -> Optional[int]:
    return None if seconds is None else int(seconds * 1000)


# ---- node, trust ----

def info() -> Call:
    return Call("GET", "/v1/info", parse=t.Info.from_dict)


def peers() -> Call:
    return Call("GET", "/v1/peers", parse=t.Peers.from_dict)


def set_hostname(hostname: str) -> Call:
    return Call("PUT", "/v1/hostname", body={"hostname": hostname},
                parse=lambda d: (d or {}).get("hostname"))


def find(hostname: str) -> Call:
    return Call("GET", f"/v1/find/{_seg(hostname)}", parse=t.Lookup.from_dict)


lookup = find


def ping(peer: str, count: Optional[int] = None) -> Call:
    return Call("POST", "/v1/ping", body=_body(peer=peer, count=count),
                parse=t.PingReport.from_dict, extra_timeout=30.0)


def handshake(peer: str, justification: Optional[str] = None) -> Call:
    return Call("POST", "/v1/trust/handshake", body=_body(peer=peer, justification=justification),
                parse=t.TrustView.from_dict)


def pending() -> Call:
    return Call("GET", "/v1/trust/pending",
                parse=lambda d: t.list_of(t.PendingRequest, d, "pending"))


def approve(peer: str) -> Call:
    return Call("POST", "/v1/trust/approve", body={"peer": peer}, parse=t.TrustView.from_dict)


def reject(peer: str, reason: Optional[str] = None) -> Call:
    return Call("POST", "/v1/trust/reject", body=_body(peer=peer, reason=reason),
                parse=t.TrustView.from_dict)


def untrust(peer: str) -> Call:
    return Call("POST", "/v1/trust/untrust", body={"peer": peer}, parse=t.TrustView.from_dict)


def trust() -> Call:
    return Call("GET", "/v1/trust", parse=lambda d: t.list_of(t.TrustView, d, "peers"))


# ---- messages (port 1001) ----

def send_message(peer: str, data: Any, kind: Optional[str] = None,
                 wait: Optional[float] = None) -> Call:
    payload, kind = encode_payload(data, kind)
    return Call("POST", "/v1/messages",
                body=_body(peer=peer, data=payload, type=kind, wait_ms=_ms(wait)),
                parse=t.SentMessage.from_dict, extra_timeout=wait or 0.0)


def reply(message_id: str, data: Any, kind: Optional[str] = None) -> Call:
    payload, kind = encode_payload(data, kind)
    return Call("POST", f"/v1/messages/{_seg(message_id)}/reply",
                body={"data": payload, "kind": kind}, parse=t.SentMessage.from_dict)


def inbox(from_: Optional[str] = None, since: Optional[int] = None, limit: Optional[int] = None,
          clear: bool = False) -> Call:
    return Call("GET", "/v1/messages/inbox",
                params=_params(from_=from_, since=since, limit=limit, clear=clear or None),
                parse=t.Inbox.from_dict)


def message(message_id: str) -> Call:
    return Call("GET", f"/v1/messages/inbox/{_seg(message_id)}", parse=t.Message.from_dict)


def outbox() -> Call:
    return Call("GET", "/v1/messages/outbox",
                parse=lambda d: t.list_of(t.OutboxEntry, d, "outbox"))


def set_webhook(url: str) -> Call:
    return Call("PUT", "/v1/webhook", body={"url": url}, parse=t.Webhook.from_dict)


def delete_webhook() -> Call:
    return Call("DELETE", "/v1/webhook", parse=t.Webhook.from_dict)


def webhook() -> Call:
    return Call("GET", "/v1/webhook", parse=t.Webhook.from_dict)


# ---- files (port 1004) ----

def send_file(peer: str, path: str, name: Optional[str] = None,
              wait: Optional[float] = None) -> Call:
    return Call("POST", "/v1/files",
                body=_body(peer=peer, path=path, name=name, wait_ms=_ms(wait)),
                parse=t.Transfer.from_dict, extra_timeout=300.0 + (wait or 0.0))


def transfers() -> Call:
    return Call("GET", "/v1/files/transfers",
                parse=lambda d: t.list_of(t.Transfer, d, "transfers"))


def received() -> Call:
    return Call("GET", "/v1/files/received",
                parse=lambda d: t.list_of(t.ReceivedFile, d, "files"))


def clear_received() -> Call:
    return Call("DELETE", "/v1/files/received",
                parse=lambda d: t.list_of(t.ReceivedFile, d, "files"))


# ---- pub/sub (port 1002) ----

def text_of(data: Any) -> str:
    """Text payloads (pub/sub, task results): a ``str`` as it is, anything else as JSON text."""
    return data if isinstance(data, str) else json.dumps(data)


def publish(topic: str, data: Any, peer: Optional[str] = None) -> Call:
    return Call("POST", "/v1/pubsub/publish",
                body=_body(peer=peer, topic=topic, data=text_of(data)),
                parse=t.Published.from_dict)


def subscribe_path(topic: str, peer: Optional[str] = None) -> Tuple[str, Optional[Dict[str, Any]]]:
    return "/v1/pubsub/subscribe", _params(peer=peer, topic=topic)


# ---- tasks (port 1003) ----

def submit_task(peer: str, task: Any, file: Optional[str] = None,
                deadline: Optional[float] = None) -> Call:
    return Call("POST", "/v1/tasks",
                body=_body(peer=peer, task=task, file=file,
                           deadline_s=None if deadline is None else int(deadline)),
                parse=t.Task.from_dict)


def tasks(submitted: Optional[bool] = None) -> Call:
    return Call("GET", "/v1/tasks", params=_params(submitted=submitted),
                parse=lambda d: t.list_of(t.Task, d, "tasks"))


def task(task_id: str) -> Call:
    return Call("GET", f"/v1/tasks/{_seg(task_id)}", parse=t.Task.from_dict)


def accept_task(task_id: str) -> Call:
    return Call("POST", f"/v1/tasks/{_seg(task_id)}/accept", parse=t.Task.from_dict)


def decline_task(task_id: str, reason: str) -> Call:
    return Call("POST", f"/v1/tasks/{_seg(task_id)}/decline", body={"reason": reason},
                parse=t.Task.from_dict)


def task_result(task_id: str, data: Any = None, file: Optional[str] = None,
                failed: Optional[bool] = None) -> Call:
    return Call("POST", f"/v1/tasks/{_seg(task_id)}/result",
                body=_body(data=None if data is None else text_of(data), file=file,
                           failed=failed),
                parse=t.Task.from_dict)


def wait_task(task_id: str, timeout: float = 30.0) -> Call:
    return Call("GET", f"/v1/tasks/{_seg(task_id)}/wait", params={"timeout_ms": _ms(timeout)},
                parse=t.Task.from_dict, extra_timeout=timeout)


def parse_tasks(d: Any) -> List[t.Task]:
    return t.list_of(t.Task, d, "tasks")
