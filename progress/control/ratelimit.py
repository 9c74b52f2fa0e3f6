"""Per-client rate limits on starting and cancelling tasks (TASKPULSE_START_RATE,
TASKPULSE_CANCEL_RATE), shared by every web process through Redis.

A rate is "N/s", "N/m" or "N/h" ("0" = unlimited). Each client address gets a
fixed window of that length; one INCR+EXPIRE round trip per call decides.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from enum import StrEnum

from django.core.exceptions import ImproperlyConfigured

from progress import conf
from progress.store import keys
from progress.store.connections import sync_client

RATE = re.compile(r"^\s*(\d+)\s*/\s*([smh])\s*$")
UNLIMITED = "0"
PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600}

# KEYS: the window's counter   ARGV: window seconds   Returns the count so far.
HIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""


class Action(StrEnum):
    START = "start"
    CANCEL = "cancel"


@dataclass(frozen=True, slots=True)
class Rate:
    count: int
    seconds: int

    @classmethod
    def parse(cls, name: str, text: str) -> Rate | None:
        """The rate `text` names (None: unlimited), or a clear error naming the setting."""
        if str(text).strip() == UNLIMITED:
            return None
        found = RATE.match(str(text))
        if not found or int(found.group(1)) < 1:
            raise ImproperlyConfigured(
                f"{name}={text!r} is not a rate: use N/s, N/m or N/h (e.g. 10/m), or 0 for "
                "no limit")
        return cls(int(found.group(1)), PERIOD_SECONDS[found.group(2)])


def rate_of(action: Action) -> Rate | None:
    if action is Action.START:
        return Rate.parse("TASKPULSE_START_RATE", conf.start_rate())
    return Rate.parse("TASKPULSE_CANCEL_RATE", conf.cancel_rate())


def hit(action: Action, client: str) -> int | None:
    """Count one `action` by `client`: None when allowed, else the seconds to wait."""
    rate = rate_of(action)
    if rate is None:
        return None
    now = time.time()
    window = int(now // rate.seconds)
    key = keys.rate_key(action.value, client, window)
    redis = sync_client()  # the first shard: counters are not tasks, any one shared server does
    count = int(redis.eval(HIT, 1, key, rate.seconds))
    if count <= rate.count:
        return None
    return max(1, int((window + 1) * rate.seconds - now + 0.999))
