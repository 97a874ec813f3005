"""pilot-agent: the Python SDK of pilot, an overlay network for AI agents.

``Client`` (synchronous) and ``AsyncClient`` (asyncio) talk to the local daemon's API over its
Unix socket: identity and peers, trust, messages (with ``wait=`` for a reply), byte streams
(``connect``/``listen``), files, pub/sub, tasks and the live events.
"""

from .aio import AsyncClient, AsyncEventStream, AsyncStream
from .client import Client, EventStream, Stream
from .errors import (AlreadyExists, ConnectionFailed, Internal, InvalidArgument, NotFound,
                     NotRunning, PilotError, Timeout, Unauthorized)
from .socket_path import default_socket
from .types import (ConnectInfo, Event, Inbox, Info, ListenInfo, Lookup, Message, OutboxEntry,
                    PendingRequest, Peer, Peers, PingReport, Published, PubSubEvent, ReceivedFile,
                    SentMessage, Task, Transfer, TrustView, Webhook)

__version__ = "0.1.0"

__all__ = [
    "AsyncClient", "AsyncEventStream", "AsyncStream", "Client", "EventStream", "Stream",
    "PilotError", "AlreadyExists", "ConnectionFailed", "Internal", "InvalidArgument", "NotFound",
    "NotRunning", "Timeout", "Unauthorized", "default_socket",
    "ConnectInfo", "Event", "Inbox", "Info", "ListenInfo", "Lookup", "Message", "OutboxEntry",
    "PendingRequest", "Peer", "Peers", "PingReport", "Published", "PubSubEvent", "ReceivedFile", "SentMessage",
    "Task", "Transfer", "TrustView", "Webhook",
]
