"""The two places where the protocol side lets a server plug in a faster path.

The protocol side (the consumer, the channel layer) is written on Channels',
redis-py's and the ASGI spec's public APIs, and that is what runs when nothing
is installed here: on stock daphne, on uvicorn, in tests, and on the launcher
when a guard turns a tuning off. The launcher (consumers/server/install.py)
installs its tuned implementations at start-up, after their guards pass; this
module never imports them (the import-linter contract "The protocol side does
not reach into the server side", pyproject.toml).

- `ConsumerLoop`: runs a consumer instead of Channels' `__call__`, and
  dispatches its messages instead of Channels' `dispatch` (consumers/base.py).
- `PubSubLinkOpener`: opens one pub/sub connection for the channel layer
  (consumers/subscriber.py; the default reads it through redis-py's PubSub).

The ASGI scope extensions a server may offer (BACKLOG_EXTENSION,
SEND_NOW_EXTENSION, consumers/outbox.py) are the third way in; they need no
installing, the server puts them in each scope.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
OnMessage = Callable[[bytes, bytes], None]
OnSubscribed = Callable[[bytes], None]
OnPong = Callable[[], None]


class ConsumerLoop(Protocol):
    async def run(self, consumer: Any, scope: dict[str, Any], receive: Receive,
                  send: Send) -> None:
        """Run `consumer` on one connection until it stops (Channels' `__call__`)."""

    async def dispatch(self, consumer: Any, message: dict[str, Any]) -> None:
        """Hand one message to the consumer's handler (Channels' `dispatch`)."""


class PubSubLink(Protocol):
    """One open pub/sub connection, as consumers/subscriber.py drives it."""

    lost: asyncio.Future[None]

    @property
    def alive(self) -> bool: ...

    async def send(self, *commands: tuple[bytes, ...]) -> None:
        """Write SUBSCRIBE, UNSUBSCRIBE or PING commands (dropped once lost)."""

    async def close(self) -> None: ...


class PubSubLinkOpener(Protocol):
    async def __call__(self, pool: Any, on_message: OnMessage, on_subscribed: OnSubscribed,
                       on_pong: OnPong) -> PubSubLink:
        """Open a connection from redis-py's `pool`; report what Redis sends on it."""


@dataclass
class Installed:
    consumer_loop: ConsumerLoop | None = None
    pubsub_link: PubSubLinkOpener | None = None


# The process's installed tunings: set once at the launcher's start-up (before
# any connection), read on every connection; empty everywhere else.
INSTALLED = Installed()


def install(consumer_loop: ConsumerLoop | None = None,
            pubsub_link: PubSubLinkOpener | None = None) -> None:
    """Use these in place of the public paths from now on (None: keep the public one)."""
    INSTALLED.consumer_loop = consumer_loop
    INSTALLED.pubsub_link = pubsub_link


def uninstall() -> None:
    """Back to the public paths (tests)."""
    install()
