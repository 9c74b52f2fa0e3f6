"""daphne's WebSocket protocol as TaskPulse runs it (consumers/server/serve.py installs one).

`PublicWebSocketProtocol` is daphne's protocol plus what the protocol needs
from the server, through calls daphne and autobahn themselves make:

- a close the server sends waits long enough for a busy client's reply, and a
  protocol error is answered with a close frame instead of a dropped TCP
  connection (`closeHandshakeTimeout`, `failByDrop`: autobahn options a
  protocol may set for itself; consumers/server/compat.py CLOSE_HANDSHAKE). The close
  codes themselves are the protocol's 4xxx codes, which autobahn's public
  `sendClose` accepts from an application on every release;
- the connection's send backlog (consumers/server/send_backlog.py), which the
  consumer's outbox reads to bound a slow reader's memory.

`TaskPulseWebSocketProtocol` adds the lean path, taken only while
consumers/server/compat.py LEAN_PROTOCOL allows it (it relies on autobahn's and
daphne's per-connection attributes): an idle connection costs ~18 KB instead
of ~31 (autobahn's state in slots and its options on the class, the
handshake's data dropped once open), and a text frame is written in one call
(`send_text_now`) instead of five (docs/BENCHMARKS.md, "Profile").
"""

from __future__ import annotations

import inspect
from collections import deque
from typing import Any

from daphne import ws_protocol
from twisted.web.http import HTTPChannel

from consumers.server.send_backlog import PausedFlag, readable, unwritten_bytes

TEXT_FRAME_FIN = 0x81  # RFC 6455 first byte: FIN, opcode 1 (text); server frames are unmasked
# How long a close the server sends (4008 to a flooding client, 4013 at capacity)
# waits for the client's reply before the TCP connection is dropped. autobahn
# waits 1 s, then resets the connection; a client still busy writing (its flood,
# or any client on a loaded machine) that has not read the close frame by then
# loses it with the reset and sees 1006 instead of the code PROTOCOL.md sends.
CLOSE_HANDSHAKE_TIMEOUT = 5.0
# The wait when the close frame is stuck behind frames the client has not read
# (a reader cut off for not reading): it will not read it in time, and the wait
# only holds the connection's buffers. autobahn's own wait.
UNREAD_CLOSE_HANDSHAKE_TIMEOUT = 1.0
# autobahn options the protocol sets for itself (autobahn takes a protocol's own
# option over the factory's); share_factory_options leaves them alone.
OWN_OPTIONS = ("failByDrop", "closeHandshakeTimeout")

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


class PublicWebSocketProtocol(ws_protocol.WebSocketProtocol):  # type: ignore[misc]
    # Answer a protocol error with a close frame the client can read, not a
    # dropped connection; autobahn takes an option set on the protocol over the
    # factory's (consumers/server/compat.py CLOSE_HANDSHAKE).
    failByDrop = False
    closeHandshakeTimeout = CLOSE_HANDSHAKE_TIMEOUT
    # Read Twisted's write buffer (consumers/server/compat.py SEND_BACKLOG), else a PausedFlag.
    read_buffer = True
    _backlog_flag: PausedFlag | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        if not (self.read_buffer and readable(self.transport)):
            self._backlog_flag = PausedFlag.watch(self.transport)

    def send_backlog(self) -> int:
        """Bytes written to this connection that the client has not taken yet
        (BACKLOG_EXTENSION; consumers/server/send_backlog.py)."""
        flag = self._backlog_flag
        return unwritten_bytes(self.transport) if flag is None else flag.backlog()

    def serverClose(self, code: int | None = None) -> None:
        if self.send_backlog() > 0:
            self.closeHandshakeTimeout = UNREAD_CLOSE_HANDSHAKE_TIMEOUT
        super().serverClose(code)


class _OpenedRequest:
    """What daphne still reads of the handshake request once a socket is open (its access log)."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


class TaskPulseWebSocketProtocol(PublicWebSocketProtocol):
    __slots__ = tuple(name for name in _PER_CONNECTION_ATTRIBUTES
                      if not hasattr(PublicWebSocketProtocol, name))

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


def share_factory_options(protocol_class: type, factory: Any) -> None:
    """Set the factory's protocol options once on the protocol class (autobahn reads
    them through the connection; see TaskPulseWebSocketProtocol._connectionMade)."""
    for name in protocol_class.CONFIG_ATTRS:  # type: ignore[attr-defined]
        if name in OWN_OPTIONS:
            continue  # PublicWebSocketProtocol's, inherited
        value = getattr(factory, name)
        # A function option (perMessageCompressionAccept) must not become a method.
        setattr(protocol_class, name, staticmethod(value) if inspect.isfunction(value) else value)
    protocol_class._options_from = factory  # type: ignore[attr-defined]
