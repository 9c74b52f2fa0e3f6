"""Per-subscription delivery rules (PROTOCOL.md §4 Guarantees), kept pure.

The consumer remembers, per subscribed task, the epoch and the last seq it
sent; `judge` says what to do with a live event: forward it, drop it (a
duplicate or stale one), or resync (a gap, or a new epoch).
"""

from dataclasses import dataclass
from enum import Enum


class Verdict(Enum):
    FORWARD = "forward"
    DROP = "drop"
    RESYNC = "resync"


@dataclass(slots=True)
class Subscription:
    task_id: str
    epoch: str | None  # None while the task had no record when we subscribed
    last_seq: int
    last_state: str | None = None  # of the last frame sent: tells state changes from progress
    stale: bool = False  # a catch-up failed: the next live event resyncs, whatever its seq


def judge(sub: Subscription, epoch: str, seq: int) -> Verdict:
    if sub.stale:
        return Verdict.RESYNC
    if sub.epoch is None:
        # Subscribed before the record existed: its first event is seq 1.
        return Verdict.FORWARD if seq == 1 else Verdict.RESYNC
    if epoch != sub.epoch:
        return Verdict.RESYNC
    if seq <= sub.last_seq:
        return Verdict.DROP
    if seq == sub.last_seq + 1:
        return Verdict.FORWARD
    return Verdict.RESYNC
