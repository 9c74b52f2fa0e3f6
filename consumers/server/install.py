"""Install the launcher's tunings of the protocol side (consumers/tuning.py), each
only while its guard passes (consumers/server/compat.py): the one-inbox consumer
loop (CONSUMER_LOOP) and hiredis on the pub/sub socket (SUBSCRIBER_SOCKET).
A guard that fails leaves the protocol side on its public path.
"""

from __future__ import annotations

from consumers import tuning
from consumers.server import compat
from consumers.server.consumer_loop import OneInboxLoop
from consumers.server.socket_link import SocketLink
from progress.compat import enabled


def install_tunings() -> None:
    """Decide the protocol side's two guards and install what they allow."""
    tuning.install(
        consumer_loop=OneInboxLoop() if enabled(compat.CONSUMER_LOOP) else None,
        pubsub_link=SocketLink.open if enabled(compat.SUBSCRIBER_SOCKET) else None,
    )
