"""Celery signal hooks: every tracked task's lifecycle is recorded and pushed
without the task author doing anything.

A hook never raises into Celery: a recording problem is logged, and the task
(and the worker) carry on.
"""

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from celery import signals
from celery.exceptions import Retry

from progress import conf, publisher
from progress.publisher.heartbeat import heartbeat
from progress.store.outbox import outboxes
from progress.store.records import EventDraft
from progress.store.sweeper import Sweeper
from progress.wire.encoding import encode_json_value, error_info
from progress.wire.states import State

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


@contextmanager
def _never_raise(what: str, task_id: str | None) -> Iterator[None]:
    try:
        yield
    except Exception:
        logger.exception("TaskPulse could not record %s for task %s", what, task_id)


def _record(draft: EventDraft) -> None:
    with _never_raise(draft.state.value, draft.task_id):
        publisher.publish(draft)


def on_before_publish(sender: str | None = None, headers: dict[str, Any] | None = None,
                      **_: Any) -> None:
    task_id = (headers or {}).get("id")
    if task_id and is_tracked(sender):
        _record(EventDraft(task_id, State.PENDING, name=sender))


def on_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task_id and is_tracked(getattr(task, "name", None), task):
        # STARTED arms the stall deadline; this process's heartbeat keeps it alive.
        _record(EventDraft(task_id, State.STARTED, name=task.name,
                           stall_timeout=conf.stall_timeout()))
        heartbeat().begin(task_id)


def on_retry(request: Any = None, reason: Any = None, sender: Any = None, **_: Any) -> None:
    task_id = getattr(request, "id", None)
    if task_id and is_tracked(getattr(sender, "name", None), sender):
        exc = reason.exc if isinstance(reason, Retry) and reason.exc else reason
        error = error_info(exc if isinstance(exc, BaseException) else Exception(str(exc)))
        _record(EventDraft(task_id, State.RETRY, error=error))


def on_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    task_id = getattr(getattr(sender, "request", None), "id", None)
    if task_id and is_tracked(getattr(sender, "name", None), sender):
        result_json = encode_json_value(result, conf.result_max_bytes())
        _record(EventDraft(task_id, State.SUCCESS, result_json=result_json))


def on_failure(task_id: str | None = None, exception: BaseException | None = None,
               sender: Any = None, einfo: Any = None, **_: Any) -> None:
    if not (task_id and is_tracked(getattr(sender, "name", None), sender)):
        return
    traceback_text = str(einfo.traceback) if einfo is not None and conf.send_traceback() else None
    state = State.REVOKED if isinstance(exception, publisher.TaskCancelled) else State.FAILURE
    _record(EventDraft(task_id, state, error=error_info(exception, traceback_text)))


def on_revoked(request: Any = None, terminated: bool = False, expired: bool = False,
               sender: Any = None, **_: Any) -> None:
    task_id = getattr(request, "id", None)
    if task_id and is_tracked(getattr(sender, "name", None), sender):
        why = "expired" if expired else ("terminated" if terminated else "revoked")
        publisher.note_group(task_id, getattr(request, "group", None))  # it may never have run
        _record(EventDraft(task_id, State.REVOKED,
                           error={"type": "TaskRevokedError", "message": f"task {why}"}))


def on_postrun(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        heartbeat().end(task_id)
        publisher.forget(task_id)


_sweepers: list[Sweeper] = []


def on_worker_ready(**_: Any) -> None:
    """The worker's main process sweeps for stalled tasks too (see progress/store/sweeper.py)."""
    _sweepers.append(Sweeper().start())


def on_worker_shutdown(**_: Any) -> None:
    while _sweepers:
        _sweepers.pop().stop()


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
