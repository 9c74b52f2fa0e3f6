"""Run daphne with TaskPulse's WebSocket settings:

    python -m consumers.serve mysite.asgi:application [daphne options]

(consumers/serve.py is that command; this module is the launcher behind it.)

The application path and every option are daphne's own; Django's settings are
the host's (DJANGO_SETTINGS_MODULE, or whatever the ASGI module sets up). Plain
`daphne mysite.asgi:application` and uvicorn serve TaskPulse too, with the
differences docs/GUARANTEES.md ("Stock daphne and uvicorn") lists; this
launcher adds:

- no absolute WebSocket lifetime (daphne cuts every socket after one day by
  default): pings every TASKPULSE_PING_INTERVAL s drop dead peers instead;
- frames far over TASKPULSE_MAX_FRAME_BYTES refused by autobahn before they are
  buffered whole (TRANSPORT_FRAME_FACTOR);
- each connection's send backlog reaches the consumer, so a client that stops
  reading costs bounded memory (consumers/outbox.py);
- the process sweeps for stalled tasks (progress/store/sweeper.py);
- with --proxy-headers, the client is the address the proxy in front appended
  to X-Forwarded-For (the last entry), not daphne's pick, the first, which any
  client can write itself (consumers/clients.py `believe_nearest_hop`);
- the tunings in consumers/server/ (ws_protocol, daphne_server, direct_write,
  send_backlog, and the consumer loop and pub/sub reader it installs into the
  protocol side: install.py), each behind a guard (consumers/server/compat.py)
  that checks what it relies on in the installed daphne, autobahn, Twisted,
  Channels and redis-py (attributes, signatures, a self-test) and logs, once,
  any it turns off.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys

from daphne import ws_protocol

from consumers.server import compat
from consumers.server.daphne_server import TaskPulseCommandLine, TaskPulseServer
from consumers.server.install import install_tunings
from consumers.server.ws_protocol import (
    UNREAD_CLOSE_HANDSHAKE_TIMEOUT,
    PublicWebSocketProtocol,
    TaskPulseWebSocketProtocol,
)
from progress.compat import enabled

NO_ABSOLUTE_LIFETIME = -1
# Every delivered frame allocates a few dozen objects that die at once; with
# the default first-generation threshold (700) the collector ran ~80 times a
# second under fan-out, each pass also walking the survivors of the last
# ones. Measured over two 6 s fan-out runs (1,000 tasks x 1 client, 5 ev/s):
# 0.63 s in the collector at 700, 0.18 s at 10,000 (docs/BENCHMARKS.md, "Profile").
GC_YOUNG_THRESHOLD = 10_000
# autobahn's own frame limit, as a multiple of TASKPULSE_MAX_FRAME_BYTES: a frame over
# the protocol's limit reaches the consumer, which closes with the protocol's 4009
# (on every server alike); only a frame far over it is cut by autobahn before it is
# buffered whole, with the transport's 1009 (PROTOCOL.md §4).
TRANSPORT_FRAME_FACTOR = 16


def daphne_args(argv: list[str]) -> list[str]:
    """TaskPulse's defaults, then the command line (which may override any of them)."""

    from progress import conf

    max_bytes = str(conf.max_frame_bytes() * TRANSPORT_FRAME_FACTOR)
    listen = [] if listens_elsewhere(argv) else [
        "--bind", os.environ.get("HOST", "127.0.0.1"),
        "--port", os.environ.get("PORT", "8000"),
    ]
    defaults = [
        *listen,
        "--websocket_timeout", str(NO_ABSOLUTE_LIFETIME),
        "--ping-interval", str(conf.ping_interval()),
        "--ping-timeout", str(conf.ping_timeout()),
        "--websocket-max-message-size", max_bytes,
        "--websocket-max-frame-size", max_bytes,
    ]
    return [*defaults, *argv]


def listens_elsewhere(argv: list[str]) -> bool:
    """Whether the command line names a Unix socket (-u, as behind nginx), a file
    descriptor or a Twisted endpoint, where daphne then listens *rather than* on a
    host and port: no default TCP port is added beside it."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-u", "--unix-socket")
    parser.add_argument("--fd")
    parser.add_argument("-e", "--endpoint", action="append")
    known, _ = parser.parse_known_args(argv)
    return bool(known.unix_socket or known.fd is not None or known.endpoint)


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
    if not enabled(compat.CLOSE_HANDSHAKE):
        PublicWebSocketProtocol.failByDrop = True  # autobahn's defaults
        PublicWebSocketProtocol.closeHandshakeTimeout = UNREAD_CLOSE_HANDSHAKE_TIMEOUT
    lean = enabled(compat.LEAN_PROTOCOL) and enabled(compat.CLOSE_HANDSHAKE)
    ws_protocol.WebSocketFactory.protocol = (
        TaskPulseWebSocketProtocol if lean else PublicWebSocketProtocol)
    TaskPulseServer.lean = enabled(compat.DAPHNE_SERVER)
    TaskPulseServer.direct_write = enabled(compat.DIRECT_WRITE)
    install_tunings()


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
