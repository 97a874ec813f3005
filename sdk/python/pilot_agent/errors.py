"""Errors of the local API: every failure carries the daemon's code, message and hint."""

from __future__ import annotations

from typing import Any, Dict, Optional, Type


class PilotError(Exception):
    """A failed call: ``code`` is stable (match on it), ``message`` says what failed,
    ``hint`` says what to do about it. ``status`` is the HTTP status, when there was one."""

    code: str = "internal"

    def __init__(self, code: str, message: str, hint: str = "", status: Optional[int] = None):
        super().__init__(f"{message} (hint: {hint})" if hint else message)
        self.code = code
        self.message = message
        self.hint = hint
        self.status = status

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, hint={self.hint!r})"


class InvalidArgument(PilotError):
    """The request was refused as malformed or out of range (``invalid_argument``)."""


class NotFound(PilotError):
    """No such peer, name, message, task or path (``not_found``)."""


class AlreadyExists(PilotError):
    """It exists already (``already_exists``)."""


class NotRunning(PilotError):
    """No daemon answers on the socket (``not_running``)."""


class ConnectionFailed(PilotError):
    """The daemon or the peer could not be reached (``connection_failed``)."""


class Timeout(PilotError):
    """No answer in time (``timeout``)."""


class Unauthorized(PilotError):
    """Refused: not trusted, not allowed, or not our socket (``unauthorized``)."""


class Internal(PilotError):
    """A bug or an unexpected answer (``internal``)."""


_BY_CODE: Dict[str, Type[PilotError]] = {
    "invalid_argument": InvalidArgument,
    "not_found": NotFound,
    "already_exists": AlreadyExists,
    "not_running": NotRunning,
    "connection_failed": ConnectionFailed,
    "timeout": Timeout,
    "unauthorized": Unauthorized,
    "internal": Internal,
}


def error(code: str, message: str, hint: str = "", status: Optional[int] = None) -> PilotError:
    """The exception class for ``code`` (``PilotError`` itself for a code this SDK does not know)."""
    return _BY_CODE.get(code, PilotError)(code, message, hint, status)


def parse_envelope(status: int, body: bytes) -> Any:
    """The ``data`` of an ok envelope; raises the envelope's error otherwise."""
    import json

    try:
        env = json.loads(body)
    except ValueError as e:
        raise error("internal", f"unreadable reply from the daemon (HTTP {status}): {e}",
                    "is this a pilot daemon's socket?", status) from None
    if not isinstance(env, dict):
        raise error("internal", f"unexpected reply from the daemon (HTTP {status})", "", status)
    if env.get("status") == "ok":
        return env.get("data")
    raise error(str(env.get("code", "internal")), str(env.get("message", f"HTTP {status}")),
                str(env.get("hint", "")), status)
