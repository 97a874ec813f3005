"""Typed answers of the local API, matching the schemas of ``docs/api/openapi.json``.

Each is a dataclass built from the daemon's JSON; fields a newer daemon adds are kept in
``raw`` (the whole object), so an older SDK still reads a newer daemon."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Dict, List, Optional, Type, TypeVar

T = TypeVar("T", bound="Model")


@dataclass
class Model:
    """Base of every answer: ``raw`` is the JSON object it was built from."""

    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    _renames: ClassVar[Dict[str, str]] = {"from": "from_"}
    _nested: ClassVar[Dict[str, Any]] = {}

    @classmethod
    def from_dict(cls: Type[T], d: Optional[Dict[str, Any]]) -> Optional[T]:
        """Builds the answer from a JSON object (``None`` stays ``None``)."""
        if d is None:
            return None
        if not isinstance(d, dict):
            return cls(raw={"value": d})  # type: ignore[call-arg]
        names = {f.name for f in fields(cls)}
        kw: Dict[str, Any] = {}
        for k, v in d.items():
            name = cls._renames.get(k, k)
            if name in names and name != "raw":
                kw[name] = v
        for name, conv in cls._nested.items():
            if kw.get(name) is not None:
                kw[name] = conv(kw[name])
        kw["raw"] = d
        return cls(**kw)


def _list(cls: Type[T]):
    return lambda items: [cls.from_dict(i) for i in items]


def list_of(cls: Type[T], data: Any, key: str) -> List[T]:
    """A list answer, whether the daemon sends a bare list or an object holding it under ``key``."""
    if isinstance(data, dict):
        items = data.get(key)
        if items is None:
            items = next((v for v in data.values() if isinstance(v, list)), [])
    else:
        items = data or []
    return [cls.from_dict(i) for i in items]


@dataclass
class Info(Model):
    """``GET /v1/info``: identity, address, mode, uptime."""

    address: Optional[str] = None
    ipv6: Optional[str] = None
    hostname: Optional[str] = None
    public_key: Optional[str] = None
    mode: Optional[str] = None
    mode_reason: Optional[str] = None
    network: Optional[str] = None
    uptime_secs: Optional[int] = None
    peers: Optional[int] = None
    pid: Optional[int] = None
    state_dir: Optional[str] = None
    listen_port: Optional[int] = None
    socks5: Optional[str] = None
    socks5_auth: Optional[str] = None
    socks5_credentials: Optional[str] = None
    version: Optional[str] = None
    data_plane: Optional[Dict[str, Any]] = None
    registries: Optional[List[Dict[str, Any]]] = None
    dns: Optional[str] = None


@dataclass
class Peer(Model):
    """One entry of ``GET /v1/peers`` (``PeerStatus``)."""

    public_key: Optional[str] = None
    address: Optional[str] = None
    ipv6: Optional[str] = None
    hostname: Optional[str] = None
    path: Optional[str] = None
    endpoint: Optional[str] = None
    rtt_ms: Optional[float] = None
    last_handshake: Optional[int] = None
    last_change: Optional[int] = None
    rx_bytes: Optional[int] = None
    tx_bytes: Optional[int] = None
    rx_packets: Optional[int] = None
    tx_packets: Optional[int] = None
    drops: Optional[Dict[str, int]] = None


@dataclass
class Peers(Model):
    """``GET /v1/peers``: the peer table and the drops that belong to no peer."""

    peers: List[Peer] = field(default_factory=list)
    counters: Optional[Dict[str, int]] = None
    _nested = {"peers": _list(Peer)}


@dataclass
class TrustView(Model):
    """One peer's trust record (``handshake``, ``approve``, ``reject``, ``untrust``, ``trust``).
    ``state`` is ``pending``, ``requested``, ``trusted``, ``rejected``, ``static`` or ``none``."""

    public_key: Optional[str] = None
    address: Optional[str] = None
    ipv6: Optional[str] = None
    hostname: Optional[str] = None
    state: Optional[str] = None


@dataclass
class PendingRequest(TrustView):
    """A trust request waiting for our decision; ``justification`` is the requester's
    (untrusted) text."""

    justification: Optional[str] = None
    since_ms: Optional[int] = None


@dataclass
class Lookup(Model):
    """A hostname found at a registry: key and address, never an endpoint."""

    hostname: Optional[str] = None
    public_key: Optional[str] = None
    address: Optional[str] = None
    ipv6: Optional[str] = None


@dataclass
class PingReport(Model):
    """``POST /v1/ping``: signed probes over the peer's current path."""

    peer: Optional[str] = None
    address: Optional[str] = None
    path: Optional[str] = None
    endpoint: Optional[str] = None
    sent: Optional[int] = None
    received: Optional[int] = None
    rtt_ms: Optional[List[Optional[float]]] = None
    min_ms: Optional[float] = None
    avg_ms: Optional[float] = None
    max_ms: Optional[float] = None


@dataclass
class Message(Model):
    """A message in our inbox (``InboxEntry``). ``from_`` is the sender's public key; ``type``
    is ``text``, ``json`` or ``binary`` (then ``data`` is base64: see :meth:`payload`)."""

    id: Optional[str] = None
    from_: Optional[str] = None
    from_address: Optional[str] = None
    from_hostname: Optional[str] = None
    type: Optional[str] = None
    data: Any = None
    sent_ms: Optional[int] = None
    received_ms: Optional[int] = None
    in_reply_to: Optional[str] = None

    def payload(self) -> Any:
        """The payload decoded: ``bytes`` for binary, a JSON value for json (parsed when the
        daemon kept it as text), ``str`` for text."""
        if self.type == "binary" and isinstance(self.data, str):
            return base64.b64decode(self.data)
        if self.type == "json" and isinstance(self.data, str):
            try:
                return json.loads(self.data)
            except ValueError:
                return self.data
        return self.data


@dataclass
class SentMessage(Model):
    """``POST /v1/messages``: ``status`` is ``delivered``, ``queued`` or ``refused`` (then
    ``refused`` says why; it stays queued). With ``wait=`` the peer's ``reply``, if it came."""

    id: Optional[str] = None
    to: Optional[str] = None
    to_ipv6: Optional[str] = None
    status: Optional[str] = None
    refused: Optional[str] = None
    in_reply_to: Optional[str] = None
    reply: Optional[Message] = None
    _nested = {"reply": Message.from_dict}


@dataclass
class Inbox(Model):
    """``GET /v1/messages/inbox``: the messages, oldest first."""

    messages: List[Message] = field(default_factory=list)
    cleared: Optional[bool] = None
    _nested = {"messages": _list(Message)}


@dataclass
class OutboxEntry(Model):
    """A message not yet acked by its recipient."""

    to: Optional[str] = None
    to_ipv6: Optional[str] = None
    message: Optional[Dict[str, Any]] = None
    refused: Optional[str] = None


@dataclass
class ConnectInfo(Model):
    """The first reply of ``connect``: the peer's key, overlay IPv6 and port."""

    peer: Optional[str] = None
    ipv6: Optional[str] = None
    port: Optional[int] = None


@dataclass
class ListenInfo(Model):
    """The first reply of ``listen``, once a peer connected."""

    port: Optional[int] = None
    peer_ipv6: Optional[str] = None
    peer: Optional[str] = None
    peer_hostname: Optional[str] = None


@dataclass
class Event(Model):
    """One live event (``GET /v1/events``): ``type`` is ``trust_request``, ``peer_trusted``,
    ``message_received``, ``lagged``, …; ``raw`` holds all of its fields."""

    type: Optional[str] = None
    peer: Optional[str] = None
    from_: Optional[str] = None
    message: Optional[Message] = None
    _nested = {"message": Message.from_dict}

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]


@dataclass
class Webhook(Model):
    """``GET /v1/webhook``: where events are posted, and the delivery counters."""

    url: Optional[str] = None
    delivered: Optional[int] = None
    failed: Optional[int] = None
    dropped: Optional[int] = None
    queued: Optional[int] = None
    queue_capacity: Optional[int] = None


@dataclass
class Transfer(Model):
    """A file transfer (``POST /v1/files``, ``GET /v1/files/transfers``): ``direction`` is
    ``outgoing`` or ``incoming``; ``state`` says where it is (queued, running, done, failed, …)."""

    id: Optional[str] = None
    direction: Optional[str] = None
    peer: Optional[str] = None
    peer_address: Optional[str] = None
    peer_hostname: Optional[str] = None
    name: Optional[str] = None
    path: Optional[str] = None
    size: Optional[int] = None
    offset: Optional[int] = None
    bytes_sent: Optional[int] = None
    state: Optional[str] = None
    error: Optional[Dict[str, Any]] = None
    sha256: Optional[str] = None
    stored_as: Optional[str] = None
    created_ms: Optional[int] = None
    updated_ms: Optional[int] = None


@dataclass
class ReceivedFile(Model):
    """A complete, verified file a peer sent us (``GET /v1/files/received``); ``path`` is
    where it is on this machine, ``from_`` the sender's key."""

    id: Optional[str] = None
    name: Optional[str] = None
    path: Optional[str] = None
    size: Optional[int] = None
    sha256: Optional[str] = None
    from_: Optional[str] = None
    from_address: Optional[str] = None
    from_hostname: Optional[str] = None
    received_ms: Optional[int] = None


@dataclass
class Published(Model):
    """``POST /v1/pubsub/publish``: the broker, the event's sequence number on its topic, how
    many subscribers matched and how many of those had a full queue."""

    broker: Optional[str] = None
    topic: Optional[str] = None
    seq: Optional[int] = None
    subscribers: Optional[int] = None
    dropped: Optional[int] = None


@dataclass
class PubSubEvent(Model):
    """One event of ``subscribe`` (``type`` ``pubsub_event``; ``lagged`` when events were
    missed): the ``broker`` and the ``event`` (publisher, topic, seq, ts_ms, data, and the
    broker's ``epoch``, raised at each broker restart)."""

    type: Optional[str] = None
    broker: Optional[str] = None
    event: Optional[Dict[str, Any]] = None

    @property
    def topic(self) -> Optional[str]:
        return (self.event or {}).get("topic")

    @property
    def data(self) -> Any:
        return (self.event or {}).get("data")

    @property
    def publisher(self) -> Optional[str]:
        return (self.event or {}).get("publisher")

    @property
    def seq(self) -> Optional[int]:
        return (self.event or {}).get("seq")


#: Task states after which nothing changes.
TASK_FINAL = ("DONE", "FAILED", "DECLINED", "EXPIRED")


@dataclass
class Task(Model):
    """A task (``POST /v1/tasks`` and the other task routes). ``role`` is ``submitter`` or
    ``worker``; ``state`` is ``NEW``, ``ACCEPTED``, ``DECLINED``, ``DONE``, ``FAILED`` or
    ``EXPIRED``; ``result`` is ``{"data": text, "file": …}`` once done or failed."""

    id: Optional[str] = None
    role: Optional[str] = None
    peer: Optional[str] = None
    submitter: Optional[str] = None
    worker: Optional[str] = None
    state: Optional[str] = None
    task: Any = None
    file: Optional[Dict[str, Any]] = None
    deadline_ms: Optional[int] = None
    created_ms: Optional[int] = None
    updated_ms: Optional[int] = None
    reason: Optional[str] = None
    result: Optional[Dict[str, Any]] = None
    undelivered: Optional[int] = None
    refused: Optional[str] = None
    records: Optional[List[Dict[str, Any]]] = None

    @property
    def final(self) -> bool:
        """Whether the task reached a state after which nothing changes."""
        return (self.state or "").upper() in TASK_FINAL

    def result_data(self) -> Any:
        """The result's ``data``, parsed as JSON when it is JSON text."""
        data = (self.result or {}).get("data")
        if isinstance(data, str):
            try:
                return json.loads(data)
            except ValueError:
                return data
        return data
