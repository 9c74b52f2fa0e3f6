"""The direct-write TCP transport (consumers/server/direct_write.py): order, partial
sends, backlog."""

from __future__ import annotations

import errno
from typing import Any

from consumers.server.direct_write import DirectWriteServer
from consumers.server.send_backlog import unwritten_bytes


class FakeSocket:
    """Takes at most `room` bytes per send, or fails with `error`."""

    def __init__(self, room: int = 1 << 20, error: int | None = None) -> None:
        self.room = room
        self.error = error
        self.received = b""
        self.sends = 0

    def send(self, data: memoryview) -> int:
        self.sends += 1
        if self.error is not None:
            raise OSError(self.error, "fake")
        taken = bytes(data[: self.room])
        self.received += taken
        return len(taken)


class FakeReactor:
    def __init__(self) -> None:
        self.writers: set[object] = set()

    def addWriter(self, selectable: object) -> None:
        self.writers.add(selectable)

    def removeWriter(self, selectable: object) -> None:
        self.writers.discard(selectable)


def make(sock: FakeSocket) -> tuple[Any, FakeReactor]:
    """A connected transport on a fake socket, without a real reactor or listening port."""
    transport: Any = DirectWriteServer.__new__(DirectWriteServer)
    reactor = FakeReactor()
    transport.socket = sock
    transport.reactor = reactor
    transport.connected = 1
    transport.disconnecting = False
    transport._tempDataBuffer = []
    transport._tempDataLen = 0
    transport.producer = None
    return transport, reactor


def test_write_goes_to_the_socket_at_once() -> None:
    """With nothing buffered, a frame is sent in the call: no writer registered, no backlog."""
    sock = FakeSocket()
    transport, reactor = make(sock)
    transport.write(b"frame-1")
    transport.write(b"frame-2")
    assert sock.received == b"frame-1frame-2"
    assert not reactor.writers
    assert unwritten_bytes(transport) == 0


def test_partial_send_buffers_the_rest_and_keeps_order() -> None:
    """What the socket did not take is buffered; later writes queue behind it, and all
    of it arrives whole and in order once the socket drains."""
    sock = FakeSocket(room=5)
    transport, reactor = make(sock)
    big = bytes(range(256)) * 40
    transport.write(big)
    assert sock.received == big[:5]
    assert reactor.writers == {transport}
    transport.write(b"next")
    assert sock.sends == 1  # queued behind the remainder, not sent around it
    assert unwritten_bytes(transport) == len(big) - 5 + len(b"next")
    sock.room = 1 << 20
    transport.doWrite()
    assert sock.received == big + b"next"
    assert unwritten_bytes(transport) == 0
    assert not reactor.writers
    transport.write(b"after")  # drained: straight to the socket again
    assert sock.received.endswith(b"after") and not reactor.writers


def test_full_socket_buffers_everything() -> None:
    """EWOULDBLOCK: the whole frame waits for the reactor, counted as backlog."""
    sock = FakeSocket(error=errno.EWOULDBLOCK)
    transport, reactor = make(sock)
    transport.write(b"x" * 100)
    assert unwritten_bytes(transport) == 100
    assert reactor.writers == {transport}


def test_broken_socket_leaves_the_loss_to_twisted() -> None:
    """A send error buffers the frame and registers the writer: Twisted's next write
    attempt meets the error and runs its connection-lost path."""
    sock = FakeSocket(error=errno.EPIPE)
    transport, reactor = make(sock)
    transport.write(b"lost")
    assert reactor.writers == {transport}
    assert transport.doWrite() is not None  # Twisted's CONNECTION_LOST


def test_closing_transport_is_left_to_twisted() -> None:
    """After loseConnection nothing is sent around Twisted's closing write."""
    sock = FakeSocket()
    transport, _ = make(sock)
    transport.disconnecting = True
    transport.write(b"late")
    assert sock.sends == 0
    assert unwritten_bytes(transport) == 4
