"""Worker presence: every worker with TaskPulse keeps a key alive in TaskPulse's Redis,
so the process that queues a task can tell when no worker would ever report on it.

A worker without the `progress` app, on another Redis server or database, or under
another TASKPULSE_KEY_PREFIX runs the task but never sets the key the web side reads,
and the task's bar stays at Queued: the web side then logs one WARNING a minute
naming those causes. It asks Redis at most once every CHECK_INTERVAL seconds.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

import redis

from progress import conf
from progress.periodic import Periodic
from progress.store import keys
from progress.store.connections import sync_client

logger = logging.getLogger(__name__)

BEAT_INTERVAL = 10.0  # seconds between two refreshes of the key by a worker
PRESENCE_TTL = 45  # seconds the key outlives a worker's last beat (several beats)
CHECK_INTERVAL = 30.0  # seconds the web side trusts its last look at the key
WARN_INTERVAL = 60.0  # seconds between two warnings of one process


def announce() -> None:
    """Say, for PRESENCE_TTL seconds, that a worker with TaskPulse runs."""
    worker = f"{socket.gethostname()}:{os.getpid()}"
    sync_client().set(keys.workers_key(), worker, ex=PRESENCE_TTL)


def any_worker_alive() -> bool:
    """Whether a worker with TaskPulse announced itself here in the last PRESENCE_TTL s."""
    return bool(sync_client().exists(keys.workers_key()))


class WorkerBeacon(Periodic):
    """A thread of a worker's main process that announces it every BEAT_INTERVAL s.
    Stopping it leaves the key to expire: another worker may still be beating it."""

    def __init__(self) -> None:
        super().__init__("taskpulse-presence", lambda: BEAT_INTERVAL, first_at_once=True)

    def run_once(self) -> None:
        announce()


def _redis_described() -> str:
    """Where this process looks, without the password a URL may hold."""
    kwargs = sync_client().connection_pool.connection_kwargs
    if "host" in kwargs:
        return f"{kwargs['host']}:{kwargs.get('port', 6379)} database {kwargs.get('db', 0)}"
    return f"database {kwargs.get('db', 0)}"  # a Sentinel master or a unix socket


class NoWorkerWarning:
    """Warns, at most once every WARN_INTERVAL s, of a task queued while no worker
    with TaskPulse has announced itself."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._checked: float | None = None
        self._alive = True
        self._warned: float | None = None

    def task_queued(self, task_id: str) -> None:
        now = self.clock()
        with self._lock:
            look = self._checked is None or now - self._checked >= CHECK_INTERVAL
            if look:
                self._checked = now
        if look:
            try:
                self._alive = any_worker_alive()
            except redis.RedisError:
                self._alive = True  # unknown: recording the task failed too, and said so
        with self._lock:
            if self._alive or (self._warned is not None
                               and now - self._warned < WARN_INTERVAL):
                return
            self._warned = now
        logger.warning(
            "TaskPulse: task %s is queued, but no worker with TaskPulse has announced itself "
            "in Redis (%s, key prefix %r) in the last %ds: its progress will stay at Queued. "
            "Start a worker; if one runs, check that it has 'progress' in INSTALLED_APPS, uses "
            "the same Redis server and database (TASKPULSE_REDIS_URL or REDIS_URL) and the "
            "same TASKPULSE_KEY_PREFIX as this process. (Logged at most once every %.0fs.)",
            task_id, _redis_described(), conf.key_prefix(), PRESENCE_TTL, WARN_INTERVAL)


_warning = NoWorkerWarning()


def task_queued(task_id: str) -> None:
    """Called where a task is recorded PENDING; warns if no worker would take it up."""
    _warning.task_queued(task_id)
