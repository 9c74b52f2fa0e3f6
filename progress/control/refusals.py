"""Refusals an operator can read: one WARNING per client and kind of refusal per
minute, naming the reason (the origin and the allowed list; why a token was refused).

Every refusal site (the WebSocket origin check, a token refused on the socket or by
the HTTP API) logs through `log_refusal`, so a client retrying in a loop costs one
line a minute, and the clients remembered are bounded (least recently refused
forgotten first). A token's text is never logged: callers pass only the reason.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

logger = logging.getLogger(__name__)

INTERVAL = 60.0  # seconds between two lines for the same client and kind
MAX_CLIENTS = 1024  # (kind, client) pairs remembered; beyond, the oldest is forgotten
MAX_TEXT = 200  # characters of client-sent text (an Origin header) put in a line


class Refusal(enum.Enum):
    ORIGIN = "origin"
    TOKEN = "token"


class RefusalLog:
    """Which (kind, client) pairs were logged when: an LRU of at most `max_clients`."""

    def __init__(self, interval: float = INTERVAL, max_clients: int = MAX_CLIENTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.max_clients = max_clients
        self.clock = clock
        self._lock = threading.Lock()  # sync views run in threads, consumers on a loop
        self._logged: OrderedDict[tuple[Refusal, str], float] = OrderedDict()

    def due(self, kind: Refusal, client: str) -> bool:
        """Whether a refusal of `kind` for `client` is to be logged now (and note it)."""
        now, key = self.clock(), (kind, client)
        with self._lock:
            last = self._logged.get(key)
            if last is not None and now - last < self.interval:
                self._logged.move_to_end(key)
                return False
            self._logged[key] = now
            self._logged.move_to_end(key)
            while len(self._logged) > self.max_clients:
                self._logged.popitem(last=False)
            return True


_log = RefusalLog()


def log_refusal(kind: Refusal, client: str, reason: str) -> None:
    """Log that `client` was refused for `reason`, unless it was within the interval."""
    if _log.due(kind, client):
        logger.warning("TaskPulse refused %s: %s. Further %s refusals of this client "
                       "within %.0fs are not logged.", client, reason, kind.value, _log.interval)


def shown(text: str) -> str:
    """Client-sent text as a log line may hold it: quoted (no line breaks), bounded."""
    return repr(text[:MAX_TEXT])
