"""Run daphne with TaskPulse's WebSocket settings: `python -m project.serve [daphne args]`.

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
  (consumers/outbox.py); and the process sweeps for stalled tasks (progress/sweeper.py).
"""

import os
import sys
from typing import Any

from daphne import ws_protocol
from daphne.cli import CommandLineInterface
from daphne.server import Server

from consumers.outbox import BACKLOG_EXTENSION

PROTOCOL_CLOSE_CODES = frozenset({1008, 1009})
PING_INTERVAL = 20
PING_TIMEOUT = 30
NO_ABSOLUTE_LIFETIME = -1
LISTEN_BACKLOG = 4096  # the kernel caps it at net.core.somaxconn


class TaskPulseWebSocketProtocol(ws_protocol.WebSocketProtocol):  # type: ignore[misc]
    def onConnect(self, request: object) -> object:
        # autobahn drops the TCP connection on protocol errors by default; we
        # want clients to read the close code (1009 for an oversized frame).
        self.failByDrop = False
        return super().onConnect(request)

    def send_backlog(self) -> int:
        """Bytes written to this connection that the socket has not taken yet.

        Twisted buffers writes without bound; consumers/outbox.py reads this
        to queue (and coalesce) frames for a client that stops reading.
        """
        transport = self.transport
        if transport is None:
            return 0
        pending = getattr(transport, "dataBuffer", b"")
        return len(pending) - int(getattr(transport, "offset", 0)) + int(
            getattr(transport, "_tempDataLen", 0))

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

    def create_application(self, protocol: Any, scope: dict[str, Any]) -> Any:
        if isinstance(protocol, TaskPulseWebSocketProtocol):
            scope.setdefault("extensions", {})[BACKLOG_EXTENSION] = protocol.send_backlog
        return super().create_application(protocol, scope)


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
    from progress.sweeper import Sweeper

    ws_protocol.WebSocketFactory.protocol = TaskPulseWebSocketProtocol
    skip_autobahn_log_formatting()
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
