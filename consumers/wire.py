"""Server frames of PROTOCOL.md §4: defined in progress/wire/server_frames.py, which
the Server-Sent Events stream shares; imported here for the consumer."""

from progress.wire.server_frames import (
    cancelling,
    error,
    object_frame,
    pong,
    resumed,
    unknown_snapshot,
    unsubscribed,
)

__all__ = ["cancelling", "error", "object_frame", "pong", "resumed", "unknown_snapshot",
           "unsubscribed"]
