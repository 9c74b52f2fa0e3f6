"""One task's progress reporter: the throttle, the ETA and the cancel check.

A progress call stores the new values and, at most every
TASKPULSE_MIN_INTERVAL seconds, publishes them (one Redis round trip). Calls in
between only store: the newest values go out at the next due call, on the
trailing flush (progress/publisher/throttle.py), or before the task's next state change.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from progress import conf, taskqueue
from progress.publisher import throttle
from progress.publisher.capping import capped
from progress.publisher.eta import RateEstimator
from progress.store.records import (
    EventDraft,
    PublishOutcome,
    ResultWrite,
    ResultWriteOffer,
)
from progress.wire.encoding import encode_json_value
from progress.wire.event_json import percent_of, progress_json
from progress.wire.states import State

# (draft, fraction of the work done or None when unknown) -> outcome
Sink = Callable[[EventDraft, "float | None"], PublishOutcome]


class TaskCancelled(Exception):
    """Raised by a progress call once someone cancelled the task.

    Catch it to clean up; let it propagate and the task ends as REVOKED.
    """


class Keep(enum.Enum):
    """Default of `update()` arguments: keep the value the reporter holds."""

    KEEP = "keep"


KEEP = Keep.KEEP


class TaskProgress:
    """Progress of one task. Thread-safe: threads inside the task may share it."""

    def __init__(self, task_id: str, sink: Sink, name: str | None = None,
                 task: Any = None) -> None:
        self.task_id = task_id
        self.name = name
        self.current: float = 0
        self.total: float | None = None
        self.message: str | None = None
        self.meta: dict[str, Any] = {}
        self.interval = conf.progress_min_interval()
        self._sink = sink
        self._task = task  # for the result backend (interop); None when only the id is known
        self._interop = conf.asyncresult_interop()
        self._rate = RateEstimator()
        self._lock = threading.Lock()
        self._next_due = 0.0  # monotonic time the next call may publish
        self._dirty = False  # values changed since the last publish
        self._scheduled = False  # the trailing flusher holds a date with this reporter
        self._cancelled = False
        self._closed = False
        self._name_sent = False
        # The task system's result backend lacks the newest values (the mirror owes a write).
        self._backend_behind = False

    # -- the task author's calls -------------------------------------------------

    def update(self, current: float | None = None, total: float | Keep | None = KEEP,
               message: str | Keep | None = KEEP, meta: dict[str, Any] | None = None,
               *, mirror: bool = True) -> None:
        """Set absolute progress. Left out: keep. `total=None`: indeterminate.

        `mirror=False`: the caller has written these values to the task system's
        result backend itself (Celery's `update_state` does), so the AsyncResult
        mirror skips them.
        """
        with self._lock:
            if current is not None:
                self.current = current
            if total is not KEEP:
                self.total = total
            if message is not KEEP:
                self.message = message
            if meta is not None:
                self.meta = _checked_meta(meta)
            self._backend_behind = mirror
            self._changed()

    def advance(self, by: float = 1, message: str | Keep | None = KEEP,
                meta: dict[str, Any] | None = None) -> None:
        """Add `by` to the current progress (safe from several threads at once)."""
        with self._lock:
            self.current += by
            if message is not KEEP:
                self.message = message
            if meta is not None:
                self.meta = _checked_meta(meta)
            self._backend_behind = True
            self._changed()

    def flush(self) -> None:
        """Publish held-back values now, whatever the throttle says."""
        with self._lock:
            if self._dirty:
                self._publish(time.monotonic(), interop=True)
            self._raise_if_cancelled()

    @property
    def rate(self) -> float | None:
        """Units of progress per second, recently; None until known."""
        return self._rate.rate()

    def __enter__(self) -> TaskProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self._lock:
            if self._dirty:
                self._publish(time.monotonic(), interop=exc is None)

    # -- called by the publisher and the trailing flusher ------------------------

    def flush_due(self) -> None:
        """Trailing flush: publish what the throttle held back (no result-backend write)."""
        with self._lock:
            self._scheduled = False
            if not self._dirty or self._closed:
                return
            now = time.monotonic()
            if now < self._next_due:
                # The task published by itself meanwhile: its values are held for the new date.
                self._scheduled = True
                throttle.flusher().schedule(self, self._next_due)
                return
            self._publish(now, interop=False)

    def publish_held_back(self) -> None:
        """Before a state change: publish what the throttle held back (no backend write).

        Celery has already stored the new state in its result backend by then.
        """
        with self._lock:
            if self._dirty and not self._closed:
                self._publish(time.monotonic(), interop=False)

    def close(self, flush: bool) -> None:
        """The task is ending: optionally publish held-back values, then publish no more."""
        with self._lock:
            if flush and self._dirty and not self._closed:
                self._publish(time.monotonic(), interop=False)
            self._closed = True

    # -- internals (lock held) ----------------------------------------------------

    def _changed(self) -> None:
        now = time.monotonic()
        if now < self._next_due:
            # The fast path: the values are stored, the throttle says wait.
            self._dirty = True
            if not self._scheduled:
                self._scheduled = True
                throttle.flusher().schedule(self, self._next_due)
        else:
            self._publish(now, interop=True)
        if self._cancelled:
            self._raise_if_cancelled()

    def _publish(self, now: float, interop: bool) -> None:  # interop: write the backend too
        self._next_due = now + self.interval
        self._dirty = False
        current, total, message = self.current, self.total, self.message
        if message is not None:
            message = capped(message if isinstance(message, str) else str(message))
        self._rate.observe(now, current)
        eta = self._rate.eta(current, total)
        meta_json = self._meta_json()
        progress = progress_json(current, total, message, eta, meta_json)
        fraction = None if not total else max(0.0, min(1.0, current / total))
        # The name is sent once: the record keeps it, and encoding it per event is waste.
        name, self._name_sent = (None if self._name_sent else self.name), True
        write = None
        if interop and self._interop and self._backend_behind:
            self._backend_behind = False
            write = self._mirror(current, total, message, eta)
        outcome = self._sink(EventDraft(self.task_id, State.PROGRESS, name,
                                        progress=progress, result_write=write), fraction)
        if outcome.cancel_requested:
            self._cancelled = True

    def _mirror(self, current: float, total: float | None, message: str | None,
                eta: float | None) -> ResultWrite | None:
        """Mirror the values into the task system's result backend (AsyncResult).

        When that backend's key lives on the task's own Redis server, the task
        system hands the write back (the offer), and it goes with the event: one
        round trip for both. Otherwise the task system writes it itself, now.
        """
        with ResultWriteOffer(self.task_id) as offer:
            taskqueue.mirror_progress(self._task, self.task_id, {
                "current": current, "total": total, "percent": percent_of(current, total),
                "message": message, "eta": eta, "meta": self.meta})
        return offer.write

    def _meta_json(self) -> str:
        return encode_json_value(self.meta, conf.meta_max_bytes()) if self.meta else "{}"

    def _raise_if_cancelled(self) -> None:
        if self._cancelled:
            raise TaskCancelled(f"task {self.task_id} was cancelled")


def _checked_meta(meta: dict[str, Any]) -> dict[str, Any]:
    # Checked at the call, so the author sees the mistake where it is made, not in
    # a log line from the trailing flusher.
    if not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict of JSON values, not {type(meta).__name__}")
    return meta
