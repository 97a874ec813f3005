"""The synchronous client: ``Client().info()``, ``send_message``, ``events()``, ``connect``…"""

from __future__ import annotations

import socket
from typing import Any, Callable, Dict, Iterator, List, Optional, Union

import httpx

from . import _calls as c
from . import types as t
from ._wire import MAX_HEAD, first_reply, parse_head, refused, sse_events, upgrade_head
from .errors import PilotError, error, parse_envelope
from .socket_path import PathLike, connect_error, default_socket

#: Seconds a call waits for the daemon's answer (as ``pilotctl``'s).
DEFAULT_TIMEOUT = 30.0


class Stream:
    """A byte stream to a peer's overlay port (``connect``) or from a peer (``listen``): the
    daemon's socket itself. ``info`` is the first reply (:class:`~pilot_agent.types.ConnectInfo`
    or :class:`~pilot_agent.types.ListenInfo`). :meth:`shutdown_write` passes a half-close on to
    the peer."""

    def __init__(self, sock: socket.socket, info: Any) -> None:
        self.socket = sock
        self.info = info

    def write(self, data: bytes) -> int:
        """Sends all of ``data``."""
        self.socket.sendall(data)
        return len(data)

    sendall = write

    def recv(self, n: int = 65536) -> bytes:
        """Up to ``n`` bytes; ``b""`` at the end of the stream."""
        return self.socket.recv(n)

    def read(self, n: int = -1) -> bytes:
        """``n`` bytes (fewer at the end of the stream), or everything until the end (``-1``)."""
        out = bytearray()
        while n < 0 or len(out) < n:
            chunk = self.socket.recv(65536 if n < 0 else min(65536, n - len(out)))
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def makefile(self, mode: str = "rb", **kw: Any):
        """A file object over the stream (``socket.makefile``)."""
        return self.socket.makefile(mode, **kw)

    def shutdown_write(self) -> None:
        """Ends our side; the peer reads the end of the stream, and may still answer."""
        self.socket.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.socket.close()

    def fileno(self) -> int:
        return self.socket.fileno()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class EventStream:
    """Server-sent events as an iterator. The subscription opens on ``with`` (or the first
    ``next``); it ends when the daemon stops or :meth:`close` is called."""

    def __init__(self, client: "Client", path: str, params: Optional[Dict[str, Any]],
                 parse: Callable[[Any], Any]) -> None:
        self._client, self._path, self._params, self._parse = client, path, params, parse
        self._cm: Any = None
        self._it: Optional[Iterator[Any]] = None

    def open(self) -> "EventStream":
        """Subscribes now (returns once the daemon answered, so no later event is missed)."""
        if self._it is None:
            timeout = httpx.Timeout(None, connect=self._client.timeout)
            self._cm = self._client._wrap(lambda: self._client._http.stream(
                "GET", self._path, params=self._params, timeout=timeout))
            resp = self._client._wrap(self._cm.__enter__)
            if resp.status_code != 200:
                body = resp.read()
                self.close()
                parse_envelope(resp.status_code, body)
                raise error("internal", f"{self._path} answered HTTP {resp.status_code}", "")
            self._it = sse_events(resp.iter_lines())
        return self

    def __iter__(self) -> "EventStream":
        return self

    def __next__(self) -> Any:
        self.open()
        assert self._it is not None
        try:
            return self._parse(next(self._it))
        except httpx.HTTPError as e:
            raise error("connection_failed", f"lost the event stream: {e}",
                        "see $PILOT_HOME/daemon.log") from None

    def close(self) -> None:
        if self._cm is not None:
            cm, self._cm = self._cm, None
            cm.__exit__(None, None, None)

    def __enter__(self) -> "EventStream":
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Client:
    """A synchronous client of the local pilot daemon.

    ``Client()`` finds the socket as ``pilotctl`` does (``$PILOT_SOCKET``, ``$PILOT_HOME``,
    ``~/.pilot``); ``Client(home=DIR)`` or ``Client(socket_path)`` names it. Errors raise
    :class:`~pilot_agent.PilotError` subclasses carrying ``code``, ``message`` and ``hint``.
    """

    def __init__(self, socket_path: Optional[PathLike] = None, *, home: Optional[PathLike] = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.socket_path = str(socket_path) if socket_path is not None else default_socket(home)
        self.timeout = timeout
        self._http = httpx.Client(transport=httpx.HTTPTransport(uds=self.socket_path),
                                  base_url="http://pilot", timeout=timeout)

    def close(self) -> None:
        """Closes the client's connections."""
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _wrap(self, f: Callable[[], Any]) -> Any:
        try:
            return f()
        except httpx.ConnectError as e:
            raise connect_error(self.socket_path, e.__cause__ or e) from None
        except httpx.TimeoutException:
            raise error("timeout", f"the daemon did not answer within {self.timeout} s",
                        "see $PILOT_HOME/daemon.log") from None
        except httpx.HTTPError as e:
            raise error("connection_failed", f"lost the connection to the daemon: {e}",
                        "see $PILOT_HOME/daemon.log") from None

    def _do(self, call: c.Call) -> Any:
        resp = self._wrap(lambda: self._http.request(
            call.method, call.path, params=call.params, json=call.body,
            timeout=self.timeout + call.extra_timeout))
        return call.parse(parse_envelope(resp.status_code, resp.content))

    # ---- node and trust ----
    def info(self) -> t.Info:
        """Identity, address, mode, uptime."""
        return self._do(c.info())

    def peers(self) -> t.Peers:
        """The peer table with per-peer traffic and drop counters."""
        return self._do(c.peers())

    def set_hostname(self, hostname: str) -> str:
        """Claims ``hostname`` at the registries."""
        return self._do(c.set_hostname(hostname))

    def find(self, hostname: str) -> Optional[t.Lookup]:
        """Looks an exact hostname up at the registries (raises ``NotFound``)."""
        return self._do(c.find(hostname))

    lookup = find

    def ping(self, peer: str, count: Optional[int] = None) -> t.PingReport:
        """Probes a trusted peer over its current path."""
        return self._do(c.ping(peer, count))

    def handshake(self, peer: str, justification: Optional[str] = None) -> Optional[t.TrustView]:
        """Asks ``peer`` (hostname, address, IPv6 or key) for trust."""
        return self._do(c.handshake(peer, justification))

    def pending(self) -> List[t.PendingRequest]:
        """Trust requests waiting for our decision."""
        return self._do(c.pending())

    def approve(self, peer: str) -> Optional[t.TrustView]:
        """Approves a pending trust request."""
        return self._do(c.approve(peer))

    def reject(self, peer: str, reason: Optional[str] = None) -> Optional[t.TrustView]:
        """Rejects a pending trust request."""
        return self._do(c.reject(peer, reason))

    def untrust(self, peer: str) -> Optional[t.TrustView]:
        """Withdraws trust (tears the tunnel down on both sides)."""
        return self._do(c.untrust(peer))

    def trust(self) -> List[t.TrustView]:
        """Every trust record."""
        return self._do(c.trust())

    # ---- messages ----
    def send_message(self, peer: str, data: Any, *, kind: Optional[str] = None,
                     wait: Optional[float] = None) -> t.SentMessage:
        """Sends a message to ``peer``'s inbox: ``str`` as text, ``bytes`` as binary, anything
        else as JSON. With ``wait`` (seconds) the answer carries the peer's ``reply``."""
        return self._do(c.send_message(peer, data, kind, wait))

    def reply(self, message_id: str, data: Any, *, kind: Optional[str] = None) -> t.SentMessage:
        """Answers a message in our inbox (its sender's ``wait`` gets it)."""
        return self._do(c.reply(message_id, data, kind))

    def inbox(self, *, from_: Optional[str] = None, since: Optional[int] = None,
              limit: Optional[int] = None, clear: bool = False) -> t.Inbox:
        """The messages in our inbox, oldest first (``clear`` deletes them)."""
        return self._do(c.inbox(from_, since, limit, clear))

    def message(self, message_id: str) -> t.Message:
        """One message of our inbox."""
        return self._do(c.message(message_id))

    def outbox(self) -> List[t.OutboxEntry]:
        """Messages not yet acked by their recipients."""
        return self._do(c.outbox())

    def messages(self) -> Iterator[t.Message]:
        """Every message: those in the inbox now, then each new one as it arrives."""
        with self.events() as events:
            seen = set()
            for m in self.inbox().messages:
                seen.add(m.id)
                yield m
            for e in events:
                if e.type == "message_received" and e.message and e.message.id not in seen:
                    seen.add(e.message.id)
                    yield e.message

    def set_webhook(self, url: str) -> t.Webhook:
        """Posts every event to ``url``."""
        return self._do(c.set_webhook(url))

    def delete_webhook(self) -> t.Webhook:
        """Stops posting events."""
        return self._do(c.delete_webhook())

    def webhook(self) -> t.Webhook:
        """The webhook's status and counters."""
        return self._do(c.webhook())

    # ---- files ----
    def send_file(self, peer: str, path: PathLike, *, name: Optional[str] = None,
                  wait: Optional[float] = None) -> t.Transfer:
        """Sends a local file to ``peer``. With ``wait`` (seconds), returns once the transfer
        is ``done`` (the peer holds the file, verified) or ``failed``, or as it stands when the
        time runs out (the transfer goes on)."""
        import os
        return self._do(c.send_file(peer, os.path.abspath(os.fspath(path)), name, wait))

    def transfers(self) -> List[t.Transfer]:
        """Our file transfers, in and out."""
        return self._do(c.transfers())

    def received(self) -> List[t.ReceivedFile]:
        """Files peers sent us."""
        return self._do(c.received())

    def clear_received(self) -> List[t.ReceivedFile]:
        """Deletes the received files; returns those it deleted."""
        return self._do(c.clear_received())

    # ---- pub/sub ----
    def publish(self, topic: str, data: Any, *, peer: Optional[str] = None) -> t.Published:
        """Publishes ``data`` (text; other values as JSON text) on ``topic`` at ``peer``'s
        broker (our own without ``peer``)."""
        return self._do(c.publish(topic, data, peer))

    def subscribe(self, topic: str, *, peer: Optional[str] = None) -> EventStream:
        """The events of ``topic`` at ``peer``'s broker (our own without ``peer``)."""
        path, params = c.subscribe_path(topic, peer)
        return EventStream(self, path, params, t.PubSubEvent.from_dict)

    # ---- tasks ----
    def submit_task(self, peer: str, task: Any, *, file: Optional[str] = None,
                    deadline: Optional[float] = None) -> t.Task:
        """Submits ``task`` (any JSON value) to ``peer``'s task service."""
        return self._do(c.submit_task(peer, task, file, deadline))

    def tasks(self, *, submitted: Optional[bool] = None) -> List[t.Task]:
        """Our tasks, newest first: ``submitted=True`` those we submitted, ``False`` those we
        were asked to do, ``None`` all."""
        return self._do(c.tasks(submitted))

    def task(self, task_id: str) -> t.Task:
        """One task's status."""
        return self._do(c.task(task_id))

    def accept_task(self, task_id: str) -> t.Task:
        """Accepts a task we received."""
        return self._do(c.accept_task(task_id))

    def decline_task(self, task_id: str, reason: str) -> t.Task:
        """Declines a task we received."""
        return self._do(c.decline_task(task_id, reason))

    def task_result(self, task_id: str, data: Any = None, *, file: Optional[str] = None,
                    failed: Optional[bool] = None) -> t.Task:
        """Sends the result of a task we accepted (``data``: text, other values as JSON text;
        ``failed=True`` reports FAILED instead of DONE)."""
        return self._do(c.task_result(task_id, data, file, failed))

    def wait_task(self, task_id: str, timeout: float = 30.0) -> t.Task:
        """Waits up to ``timeout`` s for a task we submitted to finish."""
        return self._do(c.wait_task(task_id, timeout))

    # ---- events and streams ----
    def events(self) -> EventStream:
        """The live events (``with client.events() as ev: for e in ev: …``)."""
        return EventStream(self, "/v1/events", None, t.Event.from_dict)

    def connect(self, peer: str, port: int) -> Stream:
        """Opens a byte stream to ``peer``'s overlay TCP ``port``."""
        return self._stream("/v1/connect", {"peer": peer, "port": port}, t.ConnectInfo.from_dict,
                            self.timeout)

    def listen(self, port: int, timeout: Optional[float] = None) -> Stream:
        """Waits (``timeout`` s, default forever) for one peer to connect to our ``port``."""
        return self._stream("/v1/listen", {"port": port}, t.ListenInfo.from_dict, timeout)

    def _stream(self, path: str, params: Dict[str, Any], parse: Callable[[Any], Any],
                timeout: Optional[float]) -> Stream:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(self.timeout)
            try:
                s.connect(self.socket_path)
            except OSError as e:
                raise connect_error(self.socket_path, e) from None
            s.sendall(upgrade_head(path, params))
            s.settimeout(timeout)
            status, headers = parse_head(_read_head(s))
            if status == 101:
                info = parse(first_reply(status, headers))
                s.settimeout(None)
                return Stream(s, info)
            body = _read_exactly(s, int(headers.get("content-length", "0") or 0))
            raise refused(status, body)
        except socket.timeout:
            s.close()
            raise error("timeout", f"no answer on {path} within {timeout} s", "") from None
        except BaseException:
            s.close()
            raise


def _read_head(s: socket.socket) -> bytes:
    """The answer head, read with MSG_PEEK so no stream byte after it is consumed."""
    head = bytearray()
    while True:
        peek = s.recv(MAX_HEAD, socket.MSG_PEEK)
        if not peek:
            raise error("connection_failed", "the daemon closed the connection without answering",
                        "see $PILOT_HOME/daemon.log")
        end = (head + peek).find(b"\r\n\r\n")
        if end >= 0:
            head += _read_exactly(s, end + 4 - len(head))
            return bytes(head)
        head += _read_exactly(s, len(peek))
        if len(head) > MAX_HEAD:
            raise error("internal", "the daemon's answer head is too long", "")


def _read_exactly(s: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise error("connection_failed", "the daemon closed the connection mid-answer", "")
        out += chunk
    return bytes(out)
