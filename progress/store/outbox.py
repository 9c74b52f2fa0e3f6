"""The worker's outbox: events wait here, in order, while Redis is unreachable.

A task must not crash because Redis blinked. When a publish fails with a
connection error (after redis-py's own retries), the event is buffered and a
flusher thread delivers the buffer in order once Redis answers again; events
published meanwhile queue behind it, so each task's events keep their order.
The buffer is bounded: a newer PROGRESS event of a task replaces its queued
one, and past `conf.outbox_max_events()` the oldest progress-only events go.
There is one outbox per shard (progress/store/shards.py), so a shard that is away
holds back its own tasks' events only.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

import redis

from progress import conf
from progress.process_state import ProcessSlot
from progress.store import shards
from progress.store.records import EventDraft, PublishOutcome
from progress.wire.coalescing import replaceable
from progress.wire.states import State

logger = logging.getLogger(__name__)

RETRY_MIN = 0.1
RETRY_MAX = 2.0
UNREACHABLE = (redis.ConnectionError, redis.TimeoutError)

Publish = Callable[[EventDraft], PublishOutcome]


def buffered(draft: EventDraft) -> PublishOutcome:
    """What a caller is told for a buffered event: not numbered yet, no cancel known."""
    return PublishOutcome(0, False, draft.state.value, buffered=True)


def _task_of(draft: EventDraft) -> str:
    return draft.task_id


def _is_progress(draft: EventDraft) -> bool:
    return draft.state is State.PROGRESS


class Outbox:
    def __init__(self, max_events: int) -> None:
        self.max_events = max_events
        self._pending: deque[EventDraft] = deque()
        self._lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()

    def __len__(self) -> int:
        return len(self._pending)

    def publish(self, draft: EventDraft, send: Publish) -> PublishOutcome:
        if self._pending:  # Redis was away: keep the order behind the buffer
            return self._buffer(draft, send)
        try:
            return send(draft)
        except UNREACHABLE as exc:
            logger.warning("TaskPulse: Redis unreachable (%s); buffering task events", exc)
            return self._buffer(draft, send)

    def _buffer(self, draft: EventDraft, send: Publish) -> PublishOutcome:
        with self._lock:
            self._coalesce_or_append(draft)
            if self._flusher is None:
                self._stop.clear()
                self._flusher = threading.Thread(target=self._flush, args=(send,),
                                                 name="taskpulse-outbox", daemon=True)
                self._flusher.start()
        return buffered(draft)

    def _coalesce_or_append(self, draft: EventDraft) -> None:
        if draft.state is State.PROGRESS:
            i = replaceable(self._pending, draft.task_id, _task_of, _is_progress)
            if i is not None:
                self._pending[i] = draft
                return
        if len(self._pending) >= self.max_events:
            self._drop_one()
        self._pending.append(draft)

    def _drop_one(self) -> None:
        for i, queued in enumerate(self._pending):
            if queued.state is State.PROGRESS:
                del self._pending[i]
                return
        lost = self._pending.popleft()
        logger.error("TaskPulse outbox full: dropped %s of task %s", lost.state, lost.task_id)

    def _flush(self, send: Publish) -> None:
        delay = RETRY_MIN
        while not self._stop.is_set():
            with self._lock:
                if not self._pending:
                    self._flusher = None
                    return
                draft = self._pending[0]
            try:
                send(draft)
            except UNREACHABLE:
                self._stop.wait(delay)
                delay = min(RETRY_MAX, delay * 2)
                continue
            except Exception:
                logger.exception("TaskPulse: could not publish buffered %s of task %s",
                                 draft.state, draft.task_id)
            delay = RETRY_MIN
            with self._lock:
                if self._pending and self._pending[0] is draft:
                    self._pending.popleft()
        logger.info("TaskPulse outbox stopped with %d events unsent", len(self._pending))

    def drain(self, timeout: float) -> bool:
        """Wait until the buffer is empty (e.g. before a worker process exits)."""
        flusher = self._flusher
        if flusher is not None:
            flusher.join(timeout)
        return not self._pending

    def stop(self) -> None:
        self._stop.set()
        flusher = self._flusher
        if flusher is not None:
            flusher.join(RETRY_MAX + 1)


def _stop_all(old: list[Outbox]) -> None:
    for box in old:
        box.stop()  # (settings change in tests only: what waits there is theirs)


# This process's outbox of every shard (a forked pool child gets its own).
_outboxes: ProcessSlot[list[Outbox]] = ProcessSlot(
    lambda: [Outbox(conf.outbox_max_events()) for _ in range(shards.count())],
    settings=shards.SETTINGS, on_forget=_stop_all)


def outboxes() -> list[Outbox]:
    """This process's outbox of every shard (a forked pool child gets its own)."""
    return _outboxes.get()


def outbox(shard: int = 0) -> Outbox:
    """This process's outbox of one shard (the only one, by default)."""
    return outboxes()[shard]
