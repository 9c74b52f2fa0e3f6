"""The finals this worker process recorded, kept a while and re-checked against Redis.

A final event a Redis master acknowledged but never replicated is gone after a
fail-over with nothing after it to reveal the loss (docs/GUARANTEES.md rule 13).
The process that recorded it keeps it; its heartbeat (heartbeat.py) re-checks the
record at every beat and records the final again where the record lost it, and
counts it again in the member's group (progress/store/groups.py) where the group lost it.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from progress import conf
from progress.process_state import ProcessSlot
from progress.store import groups, keys, shards
from progress.store.connections import sync_client
from progress.store.outbox import Publish
from progress.store.records import EventDraft

# Finals kept per process, the most recent ones: a process that ends thousands of
# tasks a minute keeps bounded memory (an older final then goes unchecked).
MAX_KEPT_FINALS = 1000
# How long a final is re-checked, in stall timeouts. A lossy fail-over comes soon
# after the final (the master died before replicating it), and Sentinel should
# promote within a stall timeout; from then on the sweeper waits one stall timeout
# (its grace after a new server) before it marks the stale record LOST, which no
# repair can undo (a final record refuses SUCCESS over LOST). Two stall timeouts
# cover both; checking longer would find nothing left to repair.
KEEP_STALL_TIMEOUTS = 2
RECORD_FIELDS = ("seq", "final", "eid")

logger = logging.getLogger(__name__)


class Finding(enum.Enum):
    """What a re-check found in a kept final's record."""

    HOLDS = "holds"  # the record still has the final (its event id)
    MOVED_ON = "moved_on"  # a later attempt, or another final: not ours to touch
    LOST = "lost"  # gone, or back before the final: record it again


@dataclass(frozen=True, slots=True)
class KeptFinal:
    # The final as published, its recorded seq as known_seq: recorded again, the
    # record script sees it is behind and starts a new epoch (watchers get a reset).
    draft: EventDraft
    kept_at: float  # time.monotonic()

    @property
    def seq(self) -> int:
        return self.draft.known_seq or 0


def finding(kept: KeptFinal, seq: Any, final: Any, eid: Any, expired: bool) -> Finding:
    """Judge a record's HMGET seq/final/eid reply against a kept final.

    `expired`: the record may be gone on its own (its final TTL ran out)."""
    if seq is None:
        return Finding.MOVED_ON if expired else Finding.LOST
    if _text(eid) == kept.draft.event_id:
        return Finding.HOLDS
    if _text(final) == "1" or int(seq) >= kept.seq:
        return Finding.MOVED_ON
    return Finding.LOST


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class KeptFinals:
    """Task id -> its last final this process recorded; thread-safe (the publishing
    threads keep, the heartbeat thread re-checks)."""

    def __init__(self, max_kept: int = MAX_KEPT_FINALS) -> None:
        self.max_kept = max_kept
        self._lock = threading.Lock()
        self._kept: OrderedDict[str, KeptFinal] = OrderedDict()

    def __len__(self) -> int:
        return len(self._kept)

    def keep(self, draft: EventDraft, seq: int) -> None:
        """`draft` was recorded as `seq`: keep it for re-checks."""
        with self._lock:
            current = self._kept.get(draft.task_id)
            # Recorded again by a repair: keep the first seq (never lower than the
            # repair's), so a second loss is still seen as one.
            if current is not None and current.draft.event_id == draft.event_id:
                return
            self._kept[draft.task_id] = KeptFinal(
                dataclasses.replace(draft, known_seq=seq), time.monotonic())
            self._kept.move_to_end(draft.task_id)
            while len(self._kept) > self.max_kept:
                self._kept.popitem(last=False)

    def kept(self) -> list[KeptFinal]:
        with self._lock:
            return list(self._kept.values())

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()

    def recheck(self, republish: Publish) -> list[str]:
        """Read every kept final's record (one pipelined round trip per shard) and
        `republish` those the record lost; the task ids republished. A member's final
        its group lost (the group's members hash has the member not final) is counted
        in the group again, once: a group ignores anything after a member's final.

        A final is forgotten once a record moved on past it, or once a check past
        its window finds it held (and counted); a Redis error is raised with every
        final still kept.
        """
        by_shard: dict[int, list[KeptFinal]] = {}
        for kept in self.kept():
            by_shard.setdefault(shards.shard_of(kept.draft.task_id), []).append(kept)
        found: list[tuple[KeptFinal, Finding]] = []
        for shard, finals in by_shard.items():
            found += zip(finals, self._findings_on(shard, finals), strict=True)
        # A final whose record moved on is not ours to count either.
        uncounted = {draft.task_id for draft in groups.uncounted(
            kept.draft for kept, seen in found if seen is not Finding.MOVED_ON)}
        now = time.monotonic()
        window = conf.stall_timeout() * KEEP_STALL_TIMEOUTS
        republished: list[str] = []
        for kept, seen in found:
            if seen is Finding.LOST:
                republish(kept.draft)
                republished.append(kept.draft.task_id)
            if kept.draft.task_id in uncounted:
                # After the member's own final, as when it was first recorded.
                groups.count_again(kept.draft)
                logger.warning("TaskPulse: group %s lost the final state of its member %s "
                               "(a fail-over?); counted it again",
                               kept.draft.group_id, kept.draft.task_id)
            elif seen is Finding.MOVED_ON or (
                    seen is Finding.HOLDS and now - kept.kept_at >= window):
                self._forget(kept)
        return republished

    def _findings_on(self, shard: int, finals: list[KeptFinal]) -> list[Finding]:
        pipe = sync_client(shard).pipeline(transaction=False)
        for kept in finals:
            pipe.hmget(keys.record_key(kept.draft.task_id), *RECORD_FIELDS)
        replies = pipe.execute()
        now, ttl = time.monotonic(), conf.final_ttl()
        return [finding(kept, seq, final, eid, expired=now - kept.kept_at >= ttl)
                for kept, (seq, final, eid) in zip(finals, replies, strict=True)]

    def _forget(self, kept: KeptFinal) -> None:
        with self._lock:
            if self._kept.get(kept.draft.task_id) is kept:  # not replaced meanwhile
                del self._kept[kept.draft.task_id]


def _forget_kept(kept: KeptFinals) -> None:
    kept.clear()


# This process's kept finals (recording.py keeps, the heartbeat re-checks). They are
# re-checked under the current key names: under others (a test's settings) their
# records would look gone and be written there, so a change of those forgets them.
_kept_finals: ProcessSlot[KeptFinals] = ProcessSlot(
    KeptFinals, settings={"TASKPULSE_KEY_PREFIX", *shards.SETTINGS}, on_forget=_forget_kept)


def kept_finals() -> KeptFinals:
    """The finals this process recorded, kept for the heartbeat's re-checks."""
    return _kept_finals.get()
