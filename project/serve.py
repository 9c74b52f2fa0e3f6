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
"""

import os
import sys

from daphne import ws_protocol
from daphne.cli import CommandLineInterface

PROTOCOL_CLOSE_CODES = frozenset({1008, 1009})
PING_INTERVAL = 20
PING_TIMEOUT = 30
NO_ABSOLUTE_LIFETIME = -1


class TaskPulseWebSocketProtocol(ws_protocol.WebSocketProtocol):  # type: ignore[misc]
    def onConnect(self, request: object) -> object:
        # autobahn drops the TCP connection on protocol errors by default; we
        # want clients to read the close code (1009 for an oversized frame).
        self.failByDrop = False
        return super().onConnect(request)

    def serverClose(self, code: int | None = None) -> None:
        if code in PROTOCOL_CLOSE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            super().serverClose(code)


def daphne_args(argv: list[str]) -> list[str]:
    from django.conf import settings

    max_bytes = str(getattr(settings, "PROGRESS_MAX_FRAME_BYTES", 64 * 1024))
    defaults = [
        "--bind", os.environ.get("HOST", "127.0.0.1"),
        "--port", os.environ.get("PORT", "8000"),
        "--websocket_timeout", str(NO_ABSOLUTE_LIFETIME),
        "--ping-interval", str(PING_INTERVAL),
        "--ping-timeout", str(PING_TIMEOUT),
        "--websocket-max-message-size", max_bytes,
        "--websocket-max-frame-size", max_bytes,
    ]
    return [*defaults, *argv, "project.asgi:application"]


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    ws_protocol.WebSocketFactory.protocol = TaskPulseWebSocketProtocol
    CommandLineInterface().run(daphne_args(sys.argv[1:]))


if __name__ == "__main__":
    main()
