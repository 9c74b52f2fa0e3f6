"""How a live stream learns that its client stopped reading, shared by the WebSocket
consumer (consumers/outbox.py) and the Server-Sent Events stream (progress/web/sse.py).

The tuned daphne (consumers/daphne_server.py) puts a callable in the ASGI scope's
extensions that returns the bytes written to the connection and not yet taken by
the client; past HIGH_WATER a stream queues (and coalesces) instead of writing.
"""

from collections.abc import Callable
from typing import Any

# ASGI scope extension: () -> bytes the server holds unwritten for the connection.
BACKLOG_EXTENSION = "taskpulse.send_backlog"
# Bytes the server may hold unwritten for one connection before we queue.
HIGH_WATER = 256 * 1024
DRAIN_POLL = 0.05  # seconds between looks at a backed-up transport

Backlog = Callable[[], int]


def no_backlog() -> int:
    return 0


def backlog_of(scope: dict[str, Any]) -> Backlog:
    """The scope's backlog callable; servers without one report 0 (their `send` waits)."""
    backlog: Backlog = scope.get("extensions", {}).get(BACKLOG_EXTENSION, no_backlog)
    return backlog


class ProcessQueued:
    """Bytes queued for every live stream of this process (one event loop), WebSockets
    and SSE streams together: one budget, TASKPULSE_SEND_QUEUE_PROCESS_MAX_BYTES."""

    __slots__ = ("bytes",)

    def __init__(self) -> None:
        self.bytes = 0


PROCESS_QUEUED = ProcessQueued()
