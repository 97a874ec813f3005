"""Where the daemon's API socket is, found the way ``pilotctl`` finds it: ``$PILOT_SOCKET``,
else ``$PILOT_HOME/pilot.sock``, else ``~/.pilot/pilot.sock``."""

from __future__ import annotations

import os
from typing import Optional, Union

from .errors import error

PathLike = Union[str, "os.PathLike[str]"]


def default_socket(home: Optional[PathLike] = None) -> str:
    """The socket path: ``home`` (a state directory) if given, else the environment."""
    if home is not None:
        return os.path.abspath(os.path.join(os.fspath(home), "pilot.sock"))
    sock = os.environ.get("PILOT_SOCKET")
    if sock:
        return os.path.abspath(sock)
    state = os.environ.get("PILOT_HOME")
    if not state:
        user_home = os.environ.get("HOME")
        if not user_home:
            raise error("invalid_argument", "neither PILOT_HOME nor HOME is set",
                        "set PILOT_HOME to the directory where pilot keeps its key and state")
        state = os.path.join(user_home, ".pilot")
    return os.path.abspath(os.path.join(state, "pilot.sock"))


def connect_error(path: str, exc: BaseException):
    """The error for a socket we could not connect to, as ``pilotctl`` words it."""
    if isinstance(exc, PermissionError) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        return error("unauthorized", f"permission denied on {path}",
                     "the daemon's socket is owner-only: run as the user that started the daemon")
    if isinstance(exc, (FileNotFoundError, ConnectionRefusedError)) or not os.path.exists(path):
        return error("not_running", f"no daemon is listening on {path}",
                     "start it with `pilotctl daemon start`, or set PILOT_HOME / PILOT_SOCKET")
    return error("connection_failed", f"cannot connect to {path}: {exc}",
                 "check $PILOT_SOCKET / $PILOT_HOME, or restart the daemon")
