"""Run daphne with TaskPulse's WebSocket settings:

    python -m consumers.serve mysite.asgi:application [daphne options]

The application path and every option are daphne's own; Django's settings are
the host's (DJANGO_SETTINGS_MODULE, or whatever the ASGI module sets up). Plain
`daphne mysite.asgi:application` and uvicorn serve TaskPulse too, with the
differences docs/GUARANTEES.md ("Stock daphne and uvicorn") lists; this
launcher adds:

- no absolute WebSocket lifetime (daphne cuts every socket after one day by
  default): pings every PROGRESS_PING_INTERVAL s drop dead peers instead;
- frames over PROGRESS_MAX_FRAME_BYTES refused by autobahn before they are
  buffered whole; close codes 1008/1009 as PROTOCOL.md sends them;
- each connection's send backlog reaches the consumer, so a client that stops
  reading costs bounded memory (consumers/outbox.py);
- the process sweeps for stalled tasks (progress/store/sweeper.py);
- the tunings in consumers/ws_protocol.py, consumers/daphne_server.py and
  consumers/direct_write.py, each behind a guard (consumers/compat.py) that
  checks the installed daphne, autobahn and Twisted against the versions the
  test suite ran with and logs, once, any it turns off.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys

from daphne import ws_protocol

from consumers import compat
from consumers.daphne_server import TaskPulseCommandLine, TaskPulseServer
from consumers.ws_protocol import PublicWebSocketProtocol, TaskPulseWebSocketProtocol
from progress.compat import enabled

PING_INTERVAL = 20
PING_TIMEOUT = 30
NO_ABSOLUTE_LIFETIME = -1
# Every delivered frame allocates a few dozen objects that die at once; with
# the default first-generation threshold (700) the collector ran ~80 times a
# second under fan-out, each pass also walking the survivors of the last
# ones. Measured over two 6 s fan-out runs (1,000 tasks x 1 client, 5 ev/s):
# 0.63 s in the collector at 700, 0.18 s at 10,000 (docs/BENCHMARKS.md, "Profile").
GC_YOUNG_THRESHOLD = 10_000


def daphne_args(argv: list[str]) -> list[str]:
    """TaskPulse's defaults, then the command line (which may override any of them)."""
    from django.conf import settings

    from progress import conf

    max_bytes = str(conf.max_frame_bytes())
    defaults = [
        "--bind", os.environ.get("HOST", "127.0.0.1"),
        "--port", os.environ.get("PORT", "8000"),
        "--websocket_timeout", str(NO_ABSOLUTE_LIFETIME),
        "--ping-interval", str(getattr(settings, "PROGRESS_PING_INTERVAL", PING_INTERVAL)),
        "--ping-timeout", str(getattr(settings, "PROGRESS_PING_TIMEOUT", PING_TIMEOUT)),
        "--websocket-max-message-size", max_bytes,
        "--websocket-max-frame-size", max_bytes,
    ]
    return [*defaults, *argv]


def load_application(path: str) -> object:
    """Import the host's ASGI application (`module:attribute`), which sets Django up."""
    module_name, _, attribute = path.partition(":")
    if "." not in sys.path and "" not in sys.path:
        sys.path.insert(0, ".")  # as daphne does
    target: object = importlib.import_module(module_name)
    for name in filter(None, attribute.split(".")):
        target = getattr(target, name)
    return target


def setup_django(application_path: str) -> None:
    load_application(application_path)
    from django.conf import settings

    if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
        raise SystemExit("TaskPulse: set DJANGO_SETTINGS_MODULE to the site's settings module "
                         f"({application_path} did not set Django up)")
    import django

    django.setup()


def configure() -> None:
    """Decide every guard (one log line for each tuning that is off) and install what
    they allow: the protocol class on daphne's factory, the server's tunings."""
    compat.check_all()
    PublicWebSocketProtocol.read_buffer = enabled(compat.SEND_BACKLOG)
    PublicWebSocketProtocol.protocol_close_codes = enabled(compat.CLOSE_CODES)
    if not enabled(compat.CLOSE_CODES):
        PublicWebSocketProtocol.failByDrop = True  # autobahn's default
    lean = enabled(compat.LEAN_PROTOCOL) and enabled(compat.CLOSE_CODES)
    ws_protocol.WebSocketFactory.protocol = (
        TaskPulseWebSocketProtocol if lean else PublicWebSocketProtocol)
    TaskPulseServer.lean = enabled(compat.DAPHNE_SERVER)
    TaskPulseServer.direct_write = enabled(compat.DIRECT_WRITE)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    cli = TaskPulseCommandLine()
    setup_django(cli.application_path(argv))
    configure()
    from progress.store.shards import check_shard_hash
    from progress.store.sweeper import Sweeper

    check_shard_hash()  # refuses to start when records could miss the layer's shard
    # What is loaded now lives as long as the process: keep it out of every
    # collection, and collect young objects less often (GC_YOUNG_THRESHOLD).
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    # Every server process also sweeps for stalled tasks (exactly-once LOST).
    sweeper = Sweeper().start()
    try:
        cli.run(daphne_args(argv))
    finally:
        sweeper.stop()


if __name__ == "__main__":
    main()
