"""Twisted's TCP server transport, writing at once when nothing is waiting.

Twisted buffers every `write` and registers the socket with the reactor,
which sends on its next turn and then unregisters it: under the asyncio
reactor an add_writer/remove_writer pair and a loop turn per WebSocket frame
(docs/BENCHMARKS.md, "Profile"). Like asyncio's own socket transports, this
one tries the socket first when its buffer is empty and buffers only what the
socket did not take, so ordering, the producer's pause and resume, the
connection-lost path and the count of unwritten bytes stay Twisted's.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp


def unwritten_bytes(transport: Any) -> int:
    """Bytes written to a Twisted transport that its socket has not taken yet.

    Twisted buffers writes without bound; consumers/outbox.py reads this (as
    the connection's send backlog) to queue and coalesce frames for a client
    that stops reading. 0 for a transport that keeps no such buffer (TLS).
    """
    if transport is None:
        return 0
    pending = getattr(transport, "dataBuffer", b"")
    return (len(pending) - int(getattr(transport, "offset", 0))
            + int(getattr(transport, "_tempDataLen", 0)))


class DirectWriteServer(tcp.Server):
    def write(self, data: bytes) -> None:
        if (type(data) is bytes and data and self.connected and not self.disconnecting
                and not self._writeDisconnected and not self._tempDataLen
                and not self.dataBuffer):
            sent = self.writeSomeData(data)
            if not isinstance(sent, int):
                # The connection is gone: buffer it, and Twisted's next write
                # attempt meets the same error and closes the connection.
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        super().write(data)  # type: ignore[no-untyped-call]
