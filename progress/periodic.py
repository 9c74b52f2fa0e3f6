"""A background thread that repeats one job every few seconds until stopped (the
sweeper, a worker's presence beacon): one way to start, stop and survive a failure."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Self

import redis

logger = logging.getLogger(__name__)


class Periodic:
    """Runs `run_once()` every `interval()` seconds on a daemon thread (first at once
    with `first_at_once`); a failed round is logged and the next one runs."""

    def __init__(self, name: str, interval: Callable[[], float],
                 first_at_once: bool = False) -> None:
        self.name = name
        self._interval = interval
        self._first_at_once = first_at_once
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._interval() + 10)
            self._thread = None

    def _run(self) -> None:
        if not self._first_at_once and self._stop.wait(self._interval()):
            return
        while True:
            try:
                self.run_once()
            except redis.RedisError as exc:
                logger.warning("TaskPulse %s failed (will retry): %s", self.name, exc)
            except Exception:
                logger.exception("TaskPulse %s failed", self.name)
            if self._stop.wait(self._interval()):
                return
