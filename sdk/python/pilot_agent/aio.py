"""The asyncio client: the same methods as :class:`~pilot_agent.Client`, awaited."""

from __future__ import annotations

import asyncio
import os
from typing import Any, AsyncIterator, Callable, Dict, List, Optional

import httpx

from . import _calls as c
from . import types as t
from ._wire import MAX_HEAD, SseParser, first_reply, parse_head, refused, upgrade_head
from .client import DEFAULT_TIMEOUT
from .errors import error, parse_envelope
from .socket_path import PathLike, connect_error, default_socket


class AsyncStream:
    """A byte stream to or from a peer as an asyncio pair: ``reader, writer = await
    client.connect(peer, port)``; ``info`` is the first reply. ``writer.write_eof()`` passes a
    half-close on to the peer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, info: Any):
        self.reader, self.writer, self.info = reader, writer, info

    def __iter__(self):
        return iter((self.reader, self.writer))

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass

    async def __aenter__(self) -> "AsyncStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class AsyncEventStream:
    """Server-sent events as an async iterator; ``async with`` opens the subscription."""

    def __init__(self, client: "AsyncClient", path: str, params: Optional[Dict[str, Any]],
                 parse: Callable[[Any], Any]) -> None:
        self._client, self._path, self._params, self._parse = client, path, params, parse
        self._cm: Any = None
        self._lines: Optional[AsyncIterator[str]] = None

    async def open(self) -> "AsyncEventStream":
        """Subscribes now (returns once the daemon answered, so no later event is missed)."""
        if self._lines is None:
            timeout = httpx.Timeout(None, connect=self._client.timeout)
            self._cm = self._client._http.stream("GET", self._path, params=self._params,
                                                 timeout=timeout)
            resp = await self._client._wrap(self._cm.__aenter__())
            if resp.status_code != 200:
                body = await resp.aread()
                await self.aclose()
                parse_envelope(resp.status_code, body)
                raise error("internal", f"{self._path} answered HTTP {resp.status_code}", "")
            self._lines = resp.aiter_lines()
        return self

    def __aiter__(self) -> "AsyncEventStream":
        return self

    async def __anext__(self) -> Any:
        await self.open()
        assert self._lines is not None
        parser = SseParser()
        try:
            async for line in self._lines:
                got = parser.feed(line.rstrip("\r\n"))
                if got is not None:
                    return self._parse(got)
        except httpx.HTTPError as e:
            raise error("connection_failed", f"lost the event stream: {e}",
                        "see $PILOT_HOME/daemon.log") from None
        raise StopAsyncIteration

    async def aclose(self) -> None:
        if self._cm is not None:
            cm, self._cm = self._cm, None
            await cm.__aexit__(None, None, None)

    async def __aenter__(self) -> "AsyncEventStream":
        return await self.open()

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


class AsyncClient:
    """An asyncio client of the local pilot daemon; see :class:`~pilot_agent.Client`."""

    def __init__(self, socket_path: Optional[PathLike] = None, *, home: Optional[PathLike] = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.socket_path = str(socket_path) if socket_path is not None else default_socket(home)
        self.timeout = timeout
        self._http = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=self.socket_path),
                                       base_url="http://pilot", timeout=timeout)

    async def aclose(self) -> None:
        """Closes the client's connections."""
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def _wrap(self, aw: Any) -> Any:
        try:
            return await aw
        except httpx.ConnectError as e:
            raise connect_error(self.socket_path, e.__cause__ or e) from None
        except httpx.TimeoutException:
            raise error("timeout", f"the daemon did not answer within {self.timeout} s",
                        "see $PILOT_HOME/daemon.log") from None
        except httpx.HTTPError as e:
            raise error("connection_failed", f"lost the connection to the daemon: {e}",
                        "see $PILOT_HOME/daemon.log") from None

    async def _do(self, call: c.Call) -> Any:
        resp = await self._wrap(self._http.request(
            call.method, call.path, params=call.params, json=call.body,
            timeout=self.timeout + call.extra_timeout))
        return call.parse(parse_envelope(resp.status_code, resp.content))

    # ---- node and trust ----
    async def info(self) -> t.Info:
        return await self._do(c.info())

    async def peers(self) -> t.Peers:
        return await self._do(c.peers())

    async def set_hostname(self, hostname: str) -> str:
        return await self._do(c.set_hostname(hostname))

    async def find(self, hostname: str) -> Optional[t.Lookup]:
        return await self._do(c.find(hostname))

    lookup = find

    async def ping(self, peer: str, count: Optional[int] = None) -> t.PingReport:
        return await self._do(c.ping(peer, count))

    async def handshake(self, peer: str, justification: Optional[str] = None) -> Optional[t.TrustView]:
        return await self._do(c.handshake(peer, justification))

    async def pending(self) -> List[t.PendingRequest]:
        return await self._do(c.pending())

    async def approve(self, peer: str) -> Optional[t.TrustView]:
        return await self._do(c.approve(peer))

    async def reject(self, peer: str, reason: Optional[str] = None) -> Optional[t.TrustView]:
        return await self._do(c.reject(peer, reason))

    async def untrust(self, peer: str) -> Optional[t.TrustView]:
        return await self._do(c.untrust(peer))

    async def trust(self) -> List[t.TrustView]:
        return await self._do(c.trust())

    # ---- messages ----
    async def send_message(self, peer: str, data: Any, *, kind: Optional[str] = None,
                           wait: Optional[float] = None) -> t.SentMessage:
        return await self._do(c.send_message(peer, data, kind, wait))

    async def reply(self, message_id: str, data: Any, *, kind: Optional[str] = None) -> t.SentMessage:
        return await self._do(c.reply(message_id, data, kind))

    async def inbox(self, *, from_: Optional[str] = None, since: Optional[int] = None,
                    limit: Optional[int] = None, clear: bool = False) -> t.Inbox:
        return await self._do(c.inbox(from_, since, limit, clear))

    async def message(self, message_id: str) -> t.Message:
        return await self._do(c.message(message_id))

    async def outbox(self) -> List[t.OutboxEntry]:
        return await self._do(c.outbox())

    async def messages(self) -> AsyncIterator[t.Message]:
        """Every message: those in the inbox now, then each new one as it arrives."""
        async with self.events() as events:
            seen = set()
            for m in (await self.inbox()).messages:
                seen.add(m.id)
                yield m
            async for e in events:
                if e.type == "message_received" and e.message and e.message.id not in seen:
                    seen.add(e.message.id)
                    yield e.message

    async def set_webhook(self, url: str) -> t.Webhook:
        return await self._do(c.set_webhook(url))

    async def delete_webhook(self) -> t.Webhook:
        return await self._do(c.delete_webhook())

    async def webhook(self) -> t.Webhook:
        return await self._do(c.webhook())

    # ---- files ----
    async def send_file(self, peer: str, path: PathLike, *, name: Optional[str] = None,
                        wait: Optional[float] = None) -> t.Transfer:
        return await self._do(c.send_file(peer, os.path.abspath(os.fspath(path)), name, wait))

    async def transfers(self) -> List[t.Transfer]:
        return await self._do(c.transfers())

    async def received(self) -> List[t.ReceivedFile]:
        return await self._do(c.received())

    async def clear_received(self) -> List[t.ReceivedFile]:
        return await self._do(c.clear_received())

    # ---- pub/sub ----
    async def publish(self, topic: str, data: Any, *, peer: Optional[str] = None) -> t.Published:
        return await self._do(c.publish(topic, data, peer))

    def subscribe(self, topic: str, *, peer: Optional[str] = None) -> AsyncEventStream:
        path, params = c.subscribe_path(topic, peer)
        return AsyncEventStream(self, path, params, t.PubSubEvent.from_dict)

    # ---- tasks ----
    async def submit_task(self, peer: str, task: Any, *, file: Optional[str] = None,
                          deadline: Optional[float] = None) -> t.Task:
        return await self._do(c.submit_task(peer, task, file, deadline))

    async def tasks(self, *, submitted: Optional[bool] = None) -> List[t.Task]:
        return await self._do(c.tasks(submitted))

    async def task(self, task_id: str) -> t.Task:
        return await self._do(c.task(task_id))

    async def accept_task(self, task_id: str) -> t.Task:
        return await self._do(c.accept_task(task_id))

    async def decline_task(self, task_id: str, reason: str) -> t.Task:
        return await self._do(c.decline_task(task_id, reason))

    async def task_result(self, task_id: str, data: Any = None, *, file: Optional[str] = None,
                          failed: Optional[bool] = None) -> t.Task:
        return await self._do(c.task_result(task_id, data, file, failed))

    async def wait_task(self, task_id: str, timeout: float = 30.0) -> t.Task:
        return await self._do(c.wait_task(task_id, timeout))

    # ---- events and streams ----
    def events(self) -> AsyncEventStream:
        """The live events (``async with client.events() as ev: async for e in ev: …``)."""
        return AsyncEventStream(self, "/v1/events", None, t.Event.from_dict)

    async def connect(self, peer: str, port: int) -> AsyncStream:
        """Opens a byte stream to ``peer``'s overlay TCP ``port``."""
        return await self._stream("/v1/connect", {"peer": peer, "port": port},
                                  t.ConnectInfo.from_dict, self.timeout)

    async def listen(self, port: int, timeout: Optional[float] = None) -> AsyncStream:
        """Waits (``timeout`` s, default forever) for one peer to connect to our ``port``."""
        return await self._stream("/v1/listen", {"port": port}, t.ListenInfo.from_dict, timeout)

    async def _stream(self, path: str, params: Dict[str, Any], parse: Callable[[Any], Any],
                      timeout: Optional[float]) -> AsyncStream:
        try:
            reader, writer = await asyncio.open_unix_connection(self.socket_path, limit=MAX_HEAD)
        except OSError as e:
            raise connect_error(self.socket_path, e) from None
        try:
            writer.write(upgrade_head(path, params))
            await writer.drain()
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            except asyncio.TimeoutError:
                raise error("timeout", f"no answer on {path} within {timeout} s", "") from None
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                raise error("connection_failed", "the daemon closed the connection without answering",
                            "see $PILOT_HOME/daemon.log") from None
            status, headers = parse_head(head)
            if status == 101:
                return AsyncStream(reader, writer, parse(first_reply(status, headers)))
            body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            raise refused(status, body)
        except BaseException:
            writer.close()
            raise
