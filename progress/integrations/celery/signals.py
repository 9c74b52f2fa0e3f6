"""Celery signal hooks: every tracked task's lifecycle is recorded and pushed
without the task author doing anything.

A hook never raises into Celery: a recording problem is logged, and the task
(and the worker) carry on.
"""

import logging
import time
from collections.abc import Callable
from typing import Any

from celery import signals
from celery.exceptions import Retry

from progress import conf, publisher
from progress.integrations import lifecycle
from progress.publisher import presence
from progress.publisher.heartbeat import heartbeat
from progress.publisher.presence import WorkerBeacon
from progress.store.outbox import outboxes
from progress.store.sweeper import Sweeper
from progress.wire.encoding import error_info

logger = logging.getLogger(__name__)

# Celery's own housekeeping tasks (chord_unlock, backend_cleanup, ...) are not
# user work and would only add records nobody watches.
INTERNAL_PREFIX = "celery."
OPT_OUT_ATTRIBUTE = "track_progress"
OUTBOX_DRAIN_SECONDS = 10.0


def is_tracked(task_name: str | None, task: Any = None) -> bool:
    if not task_name or task_name.startswith(INTERNAL_PREFIX):
        return False
    return bool(getattr(task, OPT_OUT_ATTRIBUTE, True))


def on_before_publish(sender: str | None = None, headers: dict[str, Any] | None = None,
                      **_: Any) -> None:
    task_id = (headers or {}).get("id")
    if task_id and is_tracked(sender):
        lifecycle.queued(task_id, sender)
        try:
            presence.task_queued(task_id)
        except Exception:  # a hook never raises into Celery
            logger.exception("TaskPulse could not check for a worker for task %s", task_id)


def expect_cancel(task: Any) -> None:
    """A cancel is not an error: Celery logs an exception listed in the task's public
    `throws` at INFO in one line ("raised expected"), not at ERROR with a traceback.
    The task still ends in Celery's FAILURE state, and ours is REVOKED."""
    throws = tuple(getattr(task, "throws", None) or ())
    if not any(issubclass(publisher.TaskCancelled, expected) for expected in throws):
        task.throws = (*throws, publisher.TaskCancelled)


def on_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task_id and is_tracked(getattr(task, "name", None), task):
        expect_cancel(task)
        # Celery runs the task even when it was cancelled a moment ago (its own
        # revoke stops a queued one): it then stops at its first progress call.
        lifecycle.started(task_id, task.name, task=task, refusable=False)


def on_retry(request: Any = None, reason: Any = None, sender: Any = None, **_: Any) -> None:
    task_id = getattr(request, "id", None)
    if task_id and is_tracked(getattr(sender, "name", None), sender):
        exc = reason.exc if isinstance(reason, Retry) and reason.exc else reason
        error = error_info(exc if isinstance(exc, BaseException) else Exception(str(exc)))
        lifecycle.retried(task_id, error)


def on_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    task_id = getattr(getattr(sender, "request", None), "id", None)
    if task_id and is_tracked(getattr(sender, "name", None), sender):
        lifecycle.finished(task_id, lifecycle.success(task_id, result))


def on_failure(task_id: str | None = None, exception: BaseException | None = None,
               sender: Any = None, einfo: Any = None, **_: Any) -> None:
    if not (task_id and is_tracked(getattr(sender, "name", None), sender)):
        return
    traceback_text = str(einfo.traceback) if einfo is not None and conf.send_traceback() else None
    cancelled = isinstance(exception, publisher.TaskCancelled)
    lifecycle.finished(task_id, lifecycle.failure(task_id, error_info(exception, traceback_text),
                                                  cancelled))


def on_revoked(request: Any = None, terminated: bool = False, expired: bool = False,
               sender: Any = None, **_: Any) -> None:
    task_id = getattr(request, "id", None)
    if task_id and is_tracked(getattr(sender, "name", None), sender):
        why = "expired" if expired else ("terminated" if terminated else "revoked")
        lifecycle.revoked(task_id, why, getattr(request, "group", None))


def on_postrun(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        lifecycle.ended(task_id)


_sweepers: list[Sweeper] = []
_beacons: list[WorkerBeacon] = []


def on_worker_ready(**_: Any) -> None:
    """The worker's main process sweeps for stalled tasks too (see progress/store/sweeper.py),
    and announces that a worker with TaskPulse runs (progress/publisher/presence.py)."""
    _sweepers.append(Sweeper().start())
    _beacons.append(WorkerBeacon().start())


def on_worker_shutdown(**_: Any) -> None:
    while _sweepers:
        _sweepers.pop().stop()
    while _beacons:
        _beacons.pop().stop()


def on_process_shutdown(**_: Any) -> None:
    heartbeat().stop()
    deadline = time.monotonic() + OUTBOX_DRAIN_SECONDS  # for all shards together
    for shard_outbox in outboxes():
        shard_outbox.drain(max(0.0, deadline - time.monotonic()))


HOOKS: list[tuple[Any, Callable[..., None]]] = [
    (signals.before_task_publish, on_before_publish),
    (signals.task_prerun, on_prerun),
    (signals.task_retry, on_retry),
    (signals.task_success, on_success),
    (signals.task_failure, on_failure),
    (signals.task_revoked, on_revoked),
    (signals.task_postrun, on_postrun),
    (signals.worker_ready, on_worker_ready),
    (signals.worker_shutdown, on_worker_shutdown),
    (signals.worker_process_shutdown, on_process_shutdown),
]


def connect() -> None:
    for signal, hook in HOOKS:
        # weak=False: the hooks are module functions, but be explicit that they live forever.
        signal.connect(hook, weak=False, dispatch_uid=f"taskpulse.{hook.__name__}")
