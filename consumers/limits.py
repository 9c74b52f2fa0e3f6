"""Per-connection rate limiting: a token bucket (PROTOCOL.md §4 `rate_limited`).

A client over the limit gets `rate_limited` errors; one that keeps sending
FLOOD_STRIKES more frames while limited is closed with 1008.
"""

import time
from dataclasses import dataclass, field
from enum import Enum


class RateVerdict(Enum):
    OK = "ok"
    LIMITED = "limited"
    FLOOD = "flood"


@dataclass(slots=True)
class TokenBucket:
    rate: float  # frames per second
    burst: float
    flood_strikes: int
    tokens: float = field(default=-1.0)
    stamp: float = field(default_factory=time.monotonic)
    strikes: int = 0

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.burst

    def take(self, now: float | None = None) -> RateVerdict:
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.strikes = 0
            return RateVerdict.OK
        self.strikes += 1
        return RateVerdict.FLOOD if self.strikes > self.flood_strikes else RateVerdict.LIMITED
