"""Twisted's TCP server transport, writing at once when nothing is waiting.

Twisted buffers every `write` and registers the socket with the reactor,
which sends on its next turn and then unregisters it: under the asyncio
reactor an add_writer/remove_writer pair and a loop turn per WebSocket frame
(docs/BENCHMARKS.md, "Profile"). Like asyncio's own socket transports, this
one tries the socket first when its buffer is empty and buffers only what the
socket did not take, so ordering, the producer's pause and resume, the
connection-lost path and the count of unwritten bytes stay Twisted's.

It reads Twisted internals (`_tempDataLen`, `dataBuffer`, `_writeDisconnected`)
and is installed only while consumers/server/compat.py DIRECT_WRITE allows it
(consumers/server/daphne_server.py); otherwise Twisted's own transport writes.
"""

from __future__ import annotations

from twisted.internet import tcp


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
