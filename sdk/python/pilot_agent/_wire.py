"""The two non-JSON parts of the API: server-sent events, and the HTTP Upgrade of stream
requests (``connect``, ``listen``), whose first reply rides in the 101's ``Pilot-Stream``
header and after which the socket carries the stream's bytes."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, Iterator, Optional, Tuple
from urllib.parse import urlencode

from .errors import error, parse_envelope

#: The ``Upgrade`` protocol of stream requests, and the header of the first reply.
STREAM_PROTOCOL = "pilot-stream"
#: The longest answer head read before the stream (the daemon's own limit).
MAX_HEAD = 64 * 1024


class SseParser:
    """Feeds lines of a ``text/event-stream``; yields each event's JSON ``data``."""

    def __init__(self) -> None:
        self._data: list = []

    def feed(self, line: str) -> Optional[Any]:
        """One line (without its newline); the decoded data when an event ends here."""
        if line == "":
            if not self._data:
                return None
            text, self._data = "\n".join(self._data), []
            try:
                return json.loads(text)
            except ValueError:
                raise error("internal", "unreadable event from the daemon", text[:200]) from None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None


def sse_events(lines: Iterable[str]) -> Iterator[Any]:
    """Every event's data in a sequence of lines."""
    p = SseParser()
    for line in lines:
        got = p.feed(line.rstrip("\r\n"))
        if got is not None:
            yield got


def upgrade_head(path: str, params: Dict[str, Any]) -> bytes:
    """The request head of a stream request."""
    target = f"{path}?{urlencode(params)}"
    return (f"POST {target} HTTP/1.1\r\nHost: pilot\r\nConnection: Upgrade\r\n"
            f"Upgrade: {STREAM_PROTOCOL}\r\nContent-Length: 0\r\n\r\n").encode()


def parse_head(head: bytes) -> Tuple[int, Dict[str, str]]:
    """Status and headers (lower-case names) of an answer head."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise error("internal", "unreadable answer head from the daemon", lines[0][:100])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    return int(parts[1]), headers


def first_reply(status: int, headers: Dict[str, str]) -> Any:
    """The first reply of a 101 answer (its ``Pilot-Stream`` header)."""
    first = headers.get(STREAM_PROTOCOL)
    if first is None:
        raise error("internal", "the daemon's 101 lacks the Pilot-Stream header", "")
    return parse_envelope(status, first.encode())


def refused(status: int, body: bytes):
    """The error of a stream request that was not upgraded."""
    parse_envelope(status, body)
    return error("internal", f"the daemon answered a stream request with HTTP {status}", "")
