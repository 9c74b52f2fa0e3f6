"""The trailing edge of the progress throttle: values held back by the throttle
are published once their interval has passed, even if the task makes no further
progress call by then.

One daemon thread per process serves every reporter. A reporter schedules
itself only on the first held-back call after a publish, so the hot path of a
throttled call never touches this module's lock.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Protocol

from progress.process_state import ProcessSlot

logger = logging.getLogger(__name__)


class Flushable(Protocol):
    def flush_due(self) -> None:
        """Publish held-back values if they are still unpublished."""


class TrailingFlusher:
    """Calls `flush_due()` of each scheduled reporter at (or just after) its due time."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Flushable]] = []
        self._order = itertools.count()  # ties on due time never compare reporters
        self._wakeup = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None

    def schedule(self, target: Flushable, due: float) -> None:
        """Flush `target` at monotonic time `due`."""
        with self._wakeup:
            heapq.heappush(self._heap, (due, next(self._order), target))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="taskpulse-trailing-flush", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is target:
                self._wakeup.notify()

    def _next_target(self) -> Flushable:
        with self._wakeup:
            while True:
                if self._heap:
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        return heapq.heappop(self._heap)[2]
                    self._wakeup.wait(wait)
                else:
                    self._wakeup.wait()

    def _run(self) -> None:
        while True:
            target = self._next_target()
            try:
                target.flush_due()
            except Exception:
                # A task's reporter must not take the flusher down for every other task.
                logger.exception("TaskPulse could not publish held-back progress")


# This process's flusher, started on first use: a forked pool child inherits the
# object but not the thread (nor a sane lock state), so it starts its own.
_flusher: ProcessSlot[TrailingFlusher] = ProcessSlot(TrailingFlusher)


def flusher() -> TrailingFlusher:
    """This process's flusher, started on first use."""
    return _flusher.get()
