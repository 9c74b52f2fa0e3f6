"""daphne's server and command line as TaskPulse runs them (consumers/server/serve.py).

- Each WebSocket's (and HTTP request's) ASGI scope gets the connection's send backlog
  (BACKLOG_EXTENSION, so a client that stops reading costs bounded memory:
  consumers/outbox.py) and, with the lean protocol, its one-call frame writer
  (SEND_NOW_EXTENSION).
- Guarded tunings (consumers/server/compat.py), each replaced by daphne's or
  Twisted's own code when its guard is off:
  DAPHNE_SERVER: TCP and TLS endpoints listen with a backlog of 4096 instead
  of 50, and a WebSocket's input queue is an `Inbox` instead of an
  asyncio.Queue (four deques, ~3 KB per idle connection);
  DIRECT_WRITE: plain-TCP connections use consumers/server/direct_write.py.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from daphne.cli import CommandLineInterface
from daphne.server import Server
from twisted.internet import tcp

from consumers.clients import believe_nearest_hop
from consumers.inbox import Inbox
from consumers.outbox import BACKLOG_EXTENSION, SEND_NOW_EXTENSION
from consumers.server.direct_write import DirectWriteServer
from consumers.server.send_backlog import readable, unwritten_bytes
from consumers.server.ws_protocol import PublicWebSocketProtocol, TaskPulseWebSocketProtocol

LISTEN_BACKLOG = 4096  # the kernel caps it at net.core.somaxconn
LISTEN_BACKLOG_ENDPOINTS = ("tcp:", "ssl:")


class TaskPulseServer(Server):  # type: ignore[misc]
    endpoints: list[str]
    # Decided at start-up from consumers/server/compat.py (consumers/server/serve.py configure()).
    lean = True
    direct_write = True

    def run(self) -> None:
        if self.lean:
            # Twisted listens with a backlog of 50: when thousands of clients
            # reconnect at once (a deploy, a network blip) the kernel drops their
            # SYNs and they wait out TCP retransmits (docs/BENCHMARKS.md, storm).
            self.endpoints = [
                f"{e}:backlog={LISTEN_BACKLOG}"
                if e.startswith(LISTEN_BACKLOG_ENDPOINTS) and "backlog=" not in e else e
                for e in self.endpoints]
        super().run()

    def listen_success(self, port: Any) -> None:
        if (self.direct_write and type(port) is tcp.Port
                and port.factory is self.http_factory):
            # Plain TCP only: under TLS the socket's writes are ciphertext
            # from the TLS layer, left to Twisted as they are; a Unix socket's
            # port (`-u`, a tcp.Port subclass) makes unix.Server transports.
            port.transport = DirectWriteServer
        super().listen_success(port)

    def create_application(self, protocol: Any, scope: dict[str, Any]) -> Any:
        if self.proxy_forwarded_address_header:  # --proxy-headers
            believe_nearest_hop(scope, self.proxy_forwarded_address_header)
        if not isinstance(protocol, PublicWebSocketProtocol):
            # An HTTP response too may be a long stream (progress/web/sse.py): its
            # unwritten bytes bound a slow reader as a WebSocket's do.
            transport = getattr(getattr(protocol, "channel", None), "transport", None)
            if PublicWebSocketProtocol.read_buffer and readable(transport):
                scope.setdefault("extensions", {})[BACKLOG_EXTENSION] = partial(
                    unwritten_bytes, transport)
            return super().create_application(protocol, scope)
        extensions = scope.setdefault("extensions", {})
        extensions[BACKLOG_EXTENSION] = protocol.send_backlog
        if isinstance(protocol, TaskPulseWebSocketProtocol):
            extensions[SEND_NOW_EXTENSION] = protocol.send_text_now
        if not self.lean:
            return super().create_application(protocol, scope)
        # daphne's own, but with an Inbox for the connection's input queue:
        # asyncio.Queue holds four deques (~3 KB per idle connection), and a
        # WebSocket consumer has one reader (consumers/base.py pump).
        scope.setdefault("asgi", {"version": "3.0"})
        input_queue = Inbox()
        instance = self.application(scope=scope, receive=input_queue.get,
                                    send=partial(self.handle_reply, protocol))
        if protocol not in self.connections:
            return None
        self.connections[protocol]["application_instance"] = asyncio.ensure_future(instance)
        return input_queue


class TaskPulseCommandLine(CommandLineInterface):  # type: ignore[misc]
    """daphne's command line (every option, the application path) starting TaskPulseServer."""

    server_class = TaskPulseServer

    def application_path(self, argv: list[str]) -> str:
        """The `module:attribute` of the ASGI application in a daphne command line
        (argparse exits with daphne's usage when it is missing)."""
        return str(self.parser.parse_args(argv).application)
