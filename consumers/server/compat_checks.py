"""Start-up self-tests of the web side's guards (consumers/server/compat.py): each runs the
tuned code path and the library's own on the installed releases, in memory, and
compares what they do.

- `frame_problems` (LEAN_PROTOCOL): a connection of the lean protocol and one of
  autobahn's own, both opened by autobahn's handshake, write the same text
  messages; `send_text_now`, the lean `sendData` and autobahn's `sendMessage`
  must put the same bytes on the wire.
- `backlog_problems` (SEND_BACKLOG): Twisted's TCP transport on a socket pair;
  `unwritten_bytes` must count exactly what the peer has not received, while
  Twisted holds it in its list buffer and in its byte buffer.
- `direct_write_problems` (DIRECT_WRITE): the same for DirectWriteServer, which
  must write at once when nothing waits, buffer behind what waits, and deliver
  every byte in order.

None touches the reactor: the protocols get a `Clock`, the transports a
registration-only stand-in, so they can run before daphne installs its reactor.
"""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

TEXT_SIZES = (0, 5, 125, 126, 65535, 65536, 70000)  # around each RFC 6455 length form
SAMPLE_TEXT = "progress: étape ✓ "
SOCKET_BUFFER = 8192  # small, so a modest write fills the socket pair
FILL = 1 << 20  # bytes written to overrun it


def _handshake() -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key +
            b"\r\nSec-WebSocket-Version: 13\r\n\r\n")


def _opened(protocol_class: type) -> tuple[Any, Any]:
    """A server connection of `protocol_class` opened by autobahn's handshake over an
    in-memory transport (cleared of the handshake's response)."""
    from autobahn.twisted.websocket import WebSocketServerFactory
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    # Twisted's and autobahn's classes are untyped here: this function is their face.
    factory: Any = WebSocketServerFactory("ws://127.0.0.1", reactor=Clock())  # type: ignore[no-untyped-call]
    factory.protocol = protocol_class
    factory.setProtocolOptions(openHandshakeTimeout=0)  # no timer: nothing to cancel
    protocol: Any = factory.buildProtocol(None)
    transport: Any = StringTransport()  # type: ignore[no-untyped-call]
    transport.registerProducer(object(), True)  # as daphne's HTTP channel is
    protocol.makeConnection(transport)
    protocol.dataReceived(_handshake())
    if protocol.state != protocol.STATE_OPEN:
        raise AssertionError(f"{protocol_class.__name__} did not open: {transport.value()!r}")
    transport.clear()
    return protocol, transport


def frame_problems() -> list[str]:
    from autobahn.twisted.websocket import WebSocketServerProtocol

    from consumers.server.ws_protocol import TaskPulseWebSocketProtocol

    class Lean(TaskPulseWebSocketProtocol):  # daphne's application side left out
        onConnect = WebSocketServerProtocol.onConnect

        def onOpen(self) -> None:
            pass

    stock, stock_wire = _opened(WebSocketServerProtocol)
    lean, lean_wire = _opened(Lean)
    problems = []
    for size in TEXT_SIZES:
        text = (SAMPLE_TEXT * (size // len(SAMPLE_TEXT) + 1))[:size]
        stock.sendMessage(text.encode(), isBinary=False)
        expected = stock_wire.value()
        stock_wire.clear()
        lean.sendMessage(text.encode(), isBinary=False)
        through_send_data = lean_wire.value()
        lean_wire.clear()
        taken = lean.send_text_now(text)
        in_one_call = lean_wire.value()
        lean_wire.clear()
        if not taken:
            problems.append(f"send_text_now refused a {size}-character message")
        elif in_one_call != expected:
            problems.append(f"send_text_now writes a {size}-character message unlike autobahn")
        if through_send_data != expected:
            problems.append(f"the lean sendData writes a {size}-character message unlike autobahn")
    return problems


class _Registrations:
    """The reactor as a transport sees it: readers and writers registered, nothing run."""

    def __init__(self) -> None:
        self.writers: set[object] = set()

    def addReader(self, reader: object) -> None:
        pass

    def removeReader(self, reader: object) -> None:
        pass

    def addWriter(self, writer: object) -> None:
        self.writers.add(writer)

    def removeWriter(self, writer: object) -> None:
        self.writers.discard(writer)


@contextmanager
def _connected(transport_class: type) -> Iterator[tuple[Any, socket.socket, _Registrations]]:
    """A Twisted TCP server transport of `transport_class` on one end of a socket pair."""
    from twisted.internet.protocol import Protocol

    ours, peer = socket.socketpair()
    try:
        for end in (ours, peer):
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        ours.setblocking(False)
        peer.setblocking(False)
        reactor = _Registrations()
        yield transport_class(ours, Protocol(), ("127.0.0.1", 0), None, 0, reactor), peer, reactor
    finally:
        ours.close()
        peer.close()


def _drain(transport: Any, peer: socket.socket, received: bytearray) -> list[str]:
    """Let the transport write (as the reactor would) until all is through; whatever the
    peer has not received must be what `unwritten_bytes` counts, at every step (a
    socket pair hands bytes straight to the peer's buffer, read empty each time)."""
    from consumers.server.send_backlog import unwritten_bytes

    written = transport.written_total
    for _ in range(10_000):
        received += _available(peer)
        backlog = unwritten_bytes(transport)
        if backlog != written - len(received):
            return [f"unwritten_bytes reads {backlog} with {written - len(received)} "
                    "bytes not yet received"]
        if backlog == 0:
            return []
        transport.doWrite()
    return ["the transport did not drain"]


def _available(peer: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := peer.recv(65536):
            data += chunk
    except BlockingIOError:
        pass
    return data


def _write(transport: Any, data: bytes) -> None:
    transport.written_total = getattr(transport, "written_total", 0) + len(data)
    transport.write(data)


def backlog_problems() -> list[str]:
    from twisted.internet import tcp

    received = bytearray()
    with _connected(tcp.Server) as (transport, peer, _):
        data = os.urandom(FILL)
        _write(transport, data[:1000])  # held in Twisted's list buffer
        _write(transport, data[1000:])
        problems = _drain(transport, peer, received)
    return problems or ([] if received == data else ["Twisted delivered other bytes"])


def direct_write_problems() -> list[str]:
    from consumers.server.direct_write import DirectWriteServer
    from consumers.server.send_backlog import unwritten_bytes

    received = bytearray()
    with _connected(DirectWriteServer) as (transport, peer, reactor):
        data = os.urandom(FILL)
        _write(transport, data[:1000])
        if reactor.writers or unwritten_bytes(transport):
            return ["a write with nothing waiting was buffered, not written at once"]
        _write(transport, data[1000:-10])  # more than the socket takes: the rest waits
        received += _available(peer)  # the socket has room again, yet
        _write(transport, data[-10:])  # this must wait behind the rest, in order
        problems = _drain(transport, peer, received)
    return problems or ([] if received == data else ["direct writes delivered other bytes"])
