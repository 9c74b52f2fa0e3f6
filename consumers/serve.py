"""Run daphne with TaskPulse's WebSocket settings: `python -m consumers.serve [daphne args]`.

Why not plain `daphne`:
- PROTOCOL.md closes bad clients with 1008 (flood) and 1009 (frame too big),
  but autobahn lets an application send only 1000 or 3000-4999; the protocol
  subclass below sends those two codes as the RFC defines them.
- daphne cuts every WebSocket after one day by default (`--websocket_timeout
  86400`), silently ending long watches; we disable that absolute lifetime and
  rely on pings (every PING_INTERVAL s, closed after PING_TIMEOUT s without a
  pong) to drop dead peers instead.
- frames over the protocol's size limit are refused by autobahn itself, before
  they are buffered whole.
- each connection's unwritten bytes reach the consumer (scope extension
  BACKLOG_EXTENSION), so a client that stops reading costs bounded memory
  (consumers/outbox.py); and the process sweeps for stalled tasks (progress/store/sweeper.py).
- an idle connection costs ~18 KB instead of ~31 (docs/BENCHMARKS.md, "Idle
  connections"): autobahn's state in slots and its options on the class, the
  handshake's data dropped once open, a light input queue; and a frame is
  written to the socket in the call (consumers/direct_write.py).
"""

import asyncio
import gc
import inspect
import os
import sys
from collections import deque
from functools import partial
from typing import Any

from daphne import ws_protocol
from daphne.cli import CommandLineInterface
from daphne.server import Server
from twisted.internet import tcp
from twisted.web.http import HTTPChannel

from consumers.direct_write import DirectWriteServer, unwritten_bytes
from consumers.inbox import Inbox
from consumers.outbox import BACKLOG_EXTENSION, SEND_NOW_EXTENSION

PROTOCOL_CLOSE_CODES = frozenset({1008, 1009})
TEXT_FRAME_FIN = 0x81  # RFC 6455 first byte: FIN, opcode 1 (text); server frames are unmasked
PING_INTERVAL = 20
PING_TIMEOUT = 30
NO_ABSOLUTE_LIFETIME = -1
LISTEN_BACKLOG = 4096  # the kernel caps it at net.core.somaxconn
# Every delivered frame allocates a few dozen objects that die at once; with
# the default first-generation threshold (700) the collector ran ~80 times a
# second under fan-out, each pass also walking the survivors of the last
# ones. Measured over two 6 s fan-out runs (1,000 tasks x 1 client, 5 ev/s):
# 0.63 s in the collector at 700, 0.18 s at 10,000 (docs/BENCHMARKS.md, "Profile").
GC_YOUNG_THRESHOLD = 10_000


# What autobahn 26.10 and daphne 4.2 store on every connection. Kept in slots
# (8 bytes each) rather than in the instance dict, which with ~120 keys took
# 3.3 KB per connection (docs/BENCHMARKS.md, "Idle connections"). A name
# missing here lands in the instance dict as before: it costs memory, not
# correctness. Names a base class defines as class attributes are left out (a
# slot would hide the class default).
_PER_CONNECTION_ATTRIBUTES = (
    # autobahn: the connection's state and the frame being read
    "is_closed", "is_open", "_transport_details",
    "_perMessageCompress", "trackedTimings", "trafficStats", "state", "send_state", "data",
    "_send_queue", "triggered", "utf8validator", "wasMaxFramePayloadSizeExceeded",
    "wasMaxMessagePayloadSizeExceeded", "closedByMe", "failedByMe", "droppedByMe", "wasClean",
    "wasNotCleanReason", "wasServerConnectionDropTimeout", "wasOpenHandshakeTimeout",
    "wasCloseHandshakeTimeout", "wasServingFlashSocketPolicyFile", "localCloseCode",
    "localCloseReason", "remoteCloseCode", "remoteCloseReason", "openHandshakeTimeoutCall",
    "closeHandshakeTimeoutCall", "autoPingTimeoutCall", "autoPingPending",
    "autoPingPendingCall", "autoPingPendingSeq", "autoPingPendingSent", "inside_message",
    "current_frame", "current_frame_masker", "control_frame_data", "_isMessageCompressed",
    "utf8validateIncomingCurrentMessage", "utf8validateLast", "message_is_binary",
    "message_data", "message_data_total_length", "frame_length", "frame_data",
    "websocket_protocol_in_use", "websocket_extensions_in_use",
    # autobahn: the opening handshake (dropped once open, see _forget_handshake)
    "http_request_data", "http_status_line", "http_headers", "http_request_uri",
    "http_request_path", "http_request_params", "http_request_host", "websocket_version",
    "websocket_protocols", "websocket_origin", "websocket_extensions", "_wskey",
    "http_response_data",
    # daphne
    "_raw_query_string", "server", "request", "protocol_to_accept", "root_path",
    "socket_opened", "last_ping", "clean_headers", "client_addr", "server_addr",
    "client_scheme", "path", "application_deferred", "application_queue",
    "handshake_deferred",
)


class _OpenedRequest:
    """What daphne still reads of the handshake request once a socket is open (its access log)."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


class TaskPulseWebSocketProtocol(ws_protocol.WebSocketProtocol):  # type: ignore[misc]
    __slots__ = tuple(name for name in _PER_CONNECTION_ATTRIBUTES
                      if not hasattr(ws_protocol.WebSocketProtocol, name))

    _options_from: object = None  # the factory whose options the class holds
    request: Any
    _send_queue: deque[tuple[bytes, bool]] | None

    def connectionMade(self) -> None:
        # daphne hands the socket over from its HTTP channel, which stays the
        # transport's producer and keeps itself and the upgrade request alive
        # (~3 KB) for the socket's lifetime; it pauses nothing once the request
        # is a WebSocket. Twisted's own HTTP/2 hand-over unregisters it too.
        if isinstance(getattr(self.transport, "producer", None), HTTPChannel):
            self.transport.unregisterProducer()
        super().connectionMade()

    def _connectionMade(self) -> None:
        # autobahn copies ~30 options from the factory onto every connection,
        # unless the protocol already has them: the class holds them instead.
        if type(self)._options_from is not self.factory:
            share_factory_options(type(self), self.factory)
        super()._connectionMade()

    def onOpen(self) -> None:
        super().onOpen()
        self._forget_handshake()

    def _forget_handshake(self) -> None:
        """Drop what only the opening handshake needed (the headers live on in the scope)."""
        self.request = _OpenedRequest(self.request.path)
        self.http_request_data = self.http_response_data = self.http_status_line = None
        self.http_headers = self.http_request_params = self._wskey = None
        self.clean_headers = None  # the scope's header list: see ProgressConsumer.connect
        self.application_deferred = None  # fired: it only held the input queue

    @property
    def send_queue(self) -> deque[tuple[bytes, bool]]:
        # autobahn queues a write here only when asked to chop or sync it (we
        # never do): create the deque on that first use, not per connection.
        if self._send_queue is None:
            self._send_queue = deque()
        return self._send_queue

    @send_queue.setter
    def send_queue(self, queue: deque[tuple[bytes, bool]]) -> None:
        self._send_queue = queue or None

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        if sync or chopsize or self._send_queue:
            super().sendData(data, sync, chopsize)
            return
        # autobahn's own unqueued path, without its per-write debug-log call.
        self.transport.write(data)
        if self.state == self.STATE_OPEN:
            self.trafficStats.outgoingOctetsWireLevel += len(data)

    def send_text_now(self, text: str) -> bool:
        """Write one text message as one frame, at once (SEND_NOW_EXTENSION).

        What daphne's ASGI send → serverSend → autobahn's sendMessage →
        sendFrame → sendData end up writing for an open, uncompressed,
        unfragmented server connection, without the five calls and checks
        in between (~12% of the server's CPU under fan-out, docs/BENCHMARKS.md
        "Profile"). False sends the caller down the full path: not open,
        compression or fragmentation negotiated, or over the size limit.
        """
        if (self.state != self.STATE_OPEN or self._perMessageCompress is not None
                or self.autoFragmentSize or self.maskServerFrames):
            return False
        payload = text.encode()
        size = len(payload)
        if 0 < self.maxMessagePayloadSize < size:
            return False  # autobahn refuses it, as before
        if size < 126:
            header = bytes((TEXT_FRAME_FIN, size))
        elif size < 65536:
            header = bytes((TEXT_FRAME_FIN, 126)) + size.to_bytes(2, "big")
        else:
            header = bytes((TEXT_FRAME_FIN, 127)) + size.to_bytes(8, "big")
        self.transport.write(header + payload)
        return True

    def send_backlog(self) -> int:
        """Bytes written to this connection that the socket has not taken yet."""
        return unwritten_bytes(self.transport)

    def serverClose(self, code: int | None = None) -> None:
        if code in PROTOCOL_CLOSE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            super().serverClose(code)


class TaskPulseServer(Server):  # type: ignore[misc]
    endpoints: list[str]

    def run(self) -> None:
        # Twisted listens with a backlog of 50: when thousands of clients
        # reconnect at once (a deploy, a network blip) the kernel drops their
        # SYNs and they wait out TCP retransmits (docs/BENCHMARKS.md, storm).
        self.endpoints = [
            f"{e}:backlog={LISTEN_BACKLOG}" if e.startswith("tcp:") and "backlog=" not in e
            else e for e in self.endpoints]
        super().run()

    def listen_success(self, port: Any) -> None:
        if isinstance(port, tcp.Port) and port.factory is self.http_factory:
            # Plain TCP only: under TLS the socket's writes are ciphertext
            # from the TLS layer, left to Twisted as they are.
            port.transport = DirectWriteServer
        super().listen_success(port)

    def create_application(self, protocol: Any, scope: dict[str, Any]) -> Any:
        if not isinstance(protocol, TaskPulseWebSocketProtocol):
            return super().create_application(protocol, scope)
        # daphne's own, but with an Inbox for the connection's input queue:
        # asyncio.Queue holds four deques (~3 KB per idle connection), and a
        # WebSocket consumer has one reader (consumers/base.py).
        extensions = scope.setdefault("extensions", {})
        extensions[BACKLOG_EXTENSION] = protocol.send_backlog
        extensions[SEND_NOW_EXTENSION] = protocol.send_text_now
        scope.setdefault("asgi", {"version": "3.0"})
        input_queue = Inbox()
        instance = self.application(scope=scope, receive=input_queue.get,
                                    send=partial(self.handle_reply, protocol))
        if protocol not in self.connections:
            return None
        self.connections[protocol]["application_instance"] = asyncio.ensure_future(instance)
        return input_queue


def daphne_args(argv: list[str]) -> list[str]:
    from django.conf import settings

    max_bytes = str(getattr(settings, "PROGRESS_MAX_FRAME_BYTES", 64 * 1024))
    defaults = [
        "--bind", os.environ.get("HOST", "127.0.0.1"),
        "--port", os.environ.get("PORT", "8000"),
        "--websocket_timeout", str(NO_ABSOLUTE_LIFETIME),
        "--ping-interval", str(getattr(settings, "PROGRESS_PING_INTERVAL", PING_INTERVAL)),
        "--ping-timeout", str(getattr(settings, "PROGRESS_PING_TIMEOUT", PING_TIMEOUT)),
        "--websocket-max-message-size", max_bytes,
        "--websocket-max-frame-size", max_bytes,
    ]
    return [*defaults, *argv, "project.asgi:application"]


def share_factory_options(protocol_class: type, factory: Any) -> None:
    """Set the factory's protocol options once on the protocol class (autobahn reads
    them through the connection; see TaskPulseWebSocketProtocol._connectionMade)."""
    for name in protocol_class.CONFIG_ATTRS:  # type: ignore[attr-defined]
        value = getattr(factory, name)
        # A function option (perMessageCompressionAccept) must not become a method.
        setattr(protocol_class, name, staticmethod(value) if inspect.isfunction(value) else value)
    # autobahn drops the TCP connection on protocol errors by default; we
    # want clients to read the close code (1009 for an oversized frame).
    protocol_class.failByDrop = False  # type: ignore[attr-defined]
    protocol_class._options_from = factory  # type: ignore[attr-defined]


def _unformatted(*_args: object, **_kwargs: object) -> str:
    return ""


def skip_autobahn_log_formatting() -> None:
    """autobahn builds the arguments of its debug log lines (coloured by click, which
    Celery installs) on every frame read or sent and pformats its config on every
    connection, with debug logging off; those strings were ~15% of the server's CPU
    under fan-out (docs/BENCHMARKS.md, "Profile")."""
    from autobahn.twisted import websocket as twisted_websocket
    from autobahn.websocket import protocol as websocket_protocol

    for module in (twisted_websocket, websocket_protocol):
        module.hltype = module.hlval = _unformatted  # type: ignore[attr-defined]
    websocket_protocol.pformat = _unformatted  # type: ignore[attr-defined]


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    from progress.store.sweeper import Sweeper

    ws_protocol.WebSocketFactory.protocol = TaskPulseWebSocketProtocol
    skip_autobahn_log_formatting()
    # What is loaded now lives as long as the process: keep it out of every
    # collection, and collect young objects less often (GC_YOUNG_THRESHOLD).
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    cli = CommandLineInterface()
    cli.server_class = TaskPulseServer
    # Every server process also sweeps for stalled tasks (exactly-once LOST).
    sweeper = Sweeper().start()
    try:
        cli.run(daphne_args(sys.argv[1:]))
    finally:
        sweeper.stop()


if __name__ == "__main__":
    main()
