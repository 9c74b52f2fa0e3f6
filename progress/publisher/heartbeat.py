"""Worker heartbeats: a running task stays alive in Redis only while its process beats.

One thread per worker process pushes out the stall deadline of every task
running in it, in one round trip per shard every `conf.heartbeat_interval()`
seconds, so a progress call costs nothing extra. If the process dies, the deadlines
lapse and progress/store/sweeper.py marks its tasks LOST. The same beat sees cancel
requests: a cancelled task that never reaches a progress call is terminated
through its task system after `conf.cancel_grace()` seconds. And it re-checks the
finals this process recorded (finals.py), recording again one a lossy fail-over
lost; the thread runs while any are kept, even with no task running.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from progress import conf, taskqueue
from progress.process_state import ProcessSlot
from progress.publisher.finals import KeptFinals, kept_finals
from progress.publisher.recording import deliver
from progress.store import keys, lua, shards
from progress.store.connections import sync_client

logger = logging.getLogger(__name__)


class Heartbeat:
    """The heartbeat thread of one process and the tasks it keeps alive."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # task id -> monotonic time its cancel request was first seen (None: not cancelled)
        self._running: dict[str, float | None] = {}
        self._terminated: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def finals(self) -> KeptFinals:
        """The finals this process recorded (recording.py), re-checked at every beat."""
        return kept_finals()

    def begin(self, task_id: str) -> None:
        with self._lock:
            self._running[task_id] = None
            self._ensure_thread()

    def watch_finals(self) -> None:
        """This process published a final: beat, re-checking the finals it recorded
        (finals.py), even after the process's last task ended."""
        with self._lock:
            self._ensure_thread()

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="taskpulse-heartbeat", daemon=True)
            self._thread.start()

    def end(self, task_id: str) -> None:
        with self._lock:
            self._running.pop(task_id, None)
            self._terminated.discard(task_id)

    def running(self) -> list[str]:
        with self._lock:
            return list(self._running)

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(conf.heartbeat_interval() + 5)
        self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(conf.heartbeat_interval()):
            try:
                self.beat()
            except redis.RedisError as exc:
                # Redis is away: the deadlines are pushed out on the next beat
                # that reaches it; the task itself carries on.
                logger.warning("TaskPulse heartbeat failed: %s", exc)
            except Exception:
                logger.exception("TaskPulse heartbeat failed")

    def beat(self) -> None:
        """Push out the deadline of every running task; terminate overdue cancels;
        record again a kept final its record lost."""
        by_shard: dict[int, list[str]] = {}
        for task_id in self.running():
            by_shard.setdefault(shards.shard_of(task_id), []).append(task_id)
        for shard, task_ids in by_shard.items():
            self._beat_on(shard, task_ids)
        finals = self.finals
        if len(finals):
            for task_id in finals.recheck(deliver):
                logger.warning("TaskPulse: the record of task %s lost its final state "
                               "(a fail-over?); recorded it again", task_id)

    def _beat_on(self, shard: int, task_ids: list[str]) -> None:
        """One pipelined round trip to the shard holding these tasks' records."""
        client = sync_client(shard)
        script = client.register_script(lua.BEAT)
        pipe = client.pipeline(transaction=False)
        stall = repr(conf.stall_timeout())
        for task_id in task_ids:
            script(keys=[keys.record_key(task_id), keys.running_index_key()],
                   args=[task_id, stall], client=pipe)
        replies = pipe.execute()
        now = time.monotonic()
        for task_id, (_armed, cancel) in zip(task_ids, replies, strict=True):
            if int(cancel):
                self._cancel_seen(task_id, now)

    def _cancel_seen(self, task_id: str, now: float) -> None:
        with self._lock:
            if task_id not in self._running or task_id in self._terminated:
                return
            seen = self._running[task_id]
            if seen is None:
                self._running[task_id] = now
                return
            if now - seen < conf.cancel_grace():
                return
            self._terminated.add(task_id)
        # The task has not reached a progress call within the grace period
        # (a long blocking step): let its task system terminate it; the worker
        # then reports it revoked (e.g. progress/integrations/celery/signals.py).
        logger.warning("TaskPulse: cancelled task %s ignored the request for %.0fs; "
                       "terminating it", task_id, conf.cancel_grace())
        taskqueue.revoke(task_id, terminate=True)


_heartbeat: ProcessSlot[Heartbeat] = ProcessSlot(Heartbeat)


def heartbeat() -> Heartbeat:
    """This process's heartbeat (a forked pool child gets its own thread)."""
    return _heartbeat.get()
