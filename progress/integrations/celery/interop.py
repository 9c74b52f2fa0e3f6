"""Celery's own progress API, both ways.

- TaskPulse progress -> Celery's result backend (the AsyncResult mirror): a
  published progress call writes PROGRESS + its values under the task's result
  key, as `self.update_state(state="PROGRESS", meta={...})` would, so code
  written for the classic Celery progress recipe keeps working. When that key
  lives on the task's own TaskPulse Redis server (the default set-up), the
  write travels with the event, inside the same record-script call: one round
  trip for both. Otherwise it is a write of its own.
- Celery's `Task.update_state` -> TaskPulse: `install()` wraps it once, so a
  task written for the tutorial (`self.update_state(state="PROGRESS",
  meta={"current": i, "total": n})`) is streamed through the task's reporter
  exactly like `track(self).update(i, total=n)`: same throttle, same seq rules.
  Celery's own write to the result backend happens first, unchanged.

Only published calls mirror (so the mirror is throttled like everything else),
and only from the task's own threads: a write from the trailing flusher could
land after Celery stored SUCCESS/FAILURE and overwrite it.
"""

from __future__ import annotations

import functools
import logging
import numbers
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from celery import Task, signals
from celery.backends.base import DisabledBackend
from celery.backends.redis import RedisBackend
from celery.states import ALL_STATES
from redis.connection import parse_url

from progress import conf
from progress.integrations.celery.compat import current_app, result_meta_is_ours_to_write
from progress.integrations.celery.signals import is_tracked
from progress.process_state import ProcessSlot
from progress.publisher import KEEP, Keep, TaskCancelled, publish, track
from progress.store import lua, shards
from progress.store.records import EventDraft, ResultWrite, result_write_offer
from progress.store.script_runner import ScriptRunner
from progress.wire.encoding import dumps, encode_json_value, safe_repr
from progress.wire.event_json import progress_info, progress_json
from progress.wire.states import State
from progress.wire.types import ErrorInfo

logger = logging.getLogger(__name__)

PROGRESS_STATE = "PROGRESS"
REDIS_DEFAULTS = {"host": "localhost", "port": 6379, "db": 0, "path": None}
MAX_WRITES = 1024  # cached result-meta envelopes (a few per task running in this process)


class ProgressMeta(TypedDict):
    """`AsyncResult(id).info` while a task reports progress through TaskPulse."""

    current: float
    total: float | None
    percent: float | None
    message: str | None
    eta: float | None
    meta: dict[str, Any]


# -- TaskPulse progress -> the result backend (the mirror) -------------------------


def store_progress(task: Any, task_id: str, info: ProgressMeta) -> None:
    """Write PROGRESS + `info` for `task_id`; a backend problem is logged, never raised.

    With the backend on the task's own TaskPulse Redis server and a publisher's
    offer open (progress/store/records.py), the write is handed to the publisher,
    which sends it with the event in one round trip: the record script builds the
    value around the event's own progress, which is `info`.
    """
    backend: Any = getattr(task, "backend", None) or current_app().backend
    if isinstance(backend, DisabledBackend):
        return  # no result backend configured: nothing reads AsyncResult
    request = getattr(task, "request", None)
    if getattr(request, "id", None) != task_id:
        request = None  # called from another thread: the task's request is thread-local
    try:
        target = _direct_target(backend)
        if target is None:
            backend.store_result(task_id, info, PROGRESS_STATE, request=request)
            return
        shard, url = target
        write = _result_write(backend, task_id, request)
        offer = result_write_offer(task_id)
        if write is not None and offer is not None and shard == shards.shard_of(task_id):
            offer.carry(write)
            return
        if write is not None:
            try:
                value = write.before + _progress_info(info) + write.after
            except (TypeError, ValueError):  # meta only Celery's encoder takes (a datetime)
                value = _encoded(backend, task_id, info, request)
        else:
            value = _encoded(backend, task_id, info, request)
        _runner(url)([_key_of(backend, task_id)], [value, int(backend.expires or 0)])
    except Exception:
        logger.warning("TaskPulse could not mirror progress of %s into the result backend",
                       task_id, exc_info=True)


@dataclass(slots=True)
class _MirrorState:
    """What this process learnt about its result backends, for the shards configured
    (process_state.py: a forked child and a change of the shards start afresh)."""

    # id(backend) -> (the backend, (its shard, that shard's URL) or None when not ours)
    direct: dict[int, tuple[Any, tuple[int, str] | None]] = field(default_factory=dict)
    # (id(backend), task id, from another thread, children) -> the write, or None when
    # Celery's meta around the result is not plain JSON
    writes: dict[tuple[int, str, bool, int], ResultWrite | None] = field(default_factory=dict)
    # shard URL -> the MIRROR script on this process's own connection to it
    runners: dict[str, ScriptRunner] = field(default_factory=dict)


_state: ProcessSlot[_MirrorState] = ProcessSlot(_MirrorState, settings=shards.SETTINGS)


def _direct_target(backend: Any) -> tuple[int, str] | None:
    direct = _state.get().direct
    cached = direct.get(id(backend))
    if cached is None or cached[0] is not backend:
        cached = direct[id(backend)] = (backend, _our_shard_of(backend))
    return cached[1]


def _result_write(backend: Any, task_id: str, request: Any) -> ResultWrite | None:
    """What Celery's store_result(task_id, <progress>, "PROGRESS") would SET, as the JSON
    before and after the progress object: Celery's meta around the result (status,
    traceback, children, date_done, group and parent ids, extended fields) is the same
    for every progress call of a task, so it is built once (Celery's _get_result_meta
    costs ~13 µs), as compact JSON (Celery reads any JSON)."""
    children = len(getattr(request, "children", None) or ()) if request is not None else 0
    cache_key = (id(backend), task_id, request is None, children)
    writes = _state.get().writes
    try:
        return writes[cache_key]
    except KeyError:
        if len(writes) >= MAX_WRITES:
            writes.clear()
        write = writes[cache_key] = _envelope(backend, task_id, request)
        return write


def _progress_info(info: ProgressMeta) -> str:
    """The progress object as the record script writes it when it carries the write
    (progress/wire/event_json.py: one builder for both)."""
    return progress_info(progress_json(info["current"], info["total"], info["message"],
                                       info["eta"], dumps(info["meta"])))


def _encoded(backend: Any, task_id: str, info: ProgressMeta, request: Any) -> str:
    """The value in full, by Celery's own encoder."""
    meta = backend._get_result_meta(result=info, state=PROGRESS_STATE, traceback=None,
                                    request=request)
    meta["task_id"] = task_id
    encoded: str = backend.encode(meta)
    return encoded


def _key_of(backend: Any, task_id: str) -> str:
    return _text(backend.get_key_for_task(task_id))


def _envelope(backend: Any, task_id: str, request: Any) -> ResultWrite | None:
    meta = backend._get_result_meta(result=None, state=PROGRESS_STATE, traceback=None,
                                    request=request)
    meta["task_id"] = task_id
    rest = {name: value for name, value in meta.items() if name not in ("status", "result")}
    # (never empty: Celery's meta always has traceback, children, date_done; task_id is ours)
    try:
        after = dumps(rest)
    except (TypeError, ValueError):
        return None  # extended fields only Celery's encoder takes: encode in full each time
    before = '{"status":' + dumps(PROGRESS_STATE) + ',"result":'
    return ResultWrite(_key_of(backend, task_id), before, "," + after[1:],
                       int(backend.expires or 0))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _our_shard_of(backend: Any) -> tuple[int, str] | None:
    """(index, URL) of the TaskPulse shard the backend writes to, or None: not one of
    ours (another server or db, a Sentinel master, a subclass such as Sentinel's
    backend, a serializer other than JSON, compression)."""
    # Exactly RedisBackend, JSON results (the record script reads the stored status as
    # JSON, and writes the mirror as JSON) on a server and db TaskPulse uses.
    if (type(backend) is not RedisBackend or getattr(backend, "serializer", None) != "json"
            or getattr(backend, "compression", None) or not result_meta_is_ours_to_write()):
        return None
    theirs = {**REDIS_DEFAULTS, **getattr(backend, "connparams", {})}
    for index, url in enumerate(shards.servers()):
        if not isinstance(url, str):
            continue
        url_params: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        ours = {**REDIS_DEFAULTS, **url_params}
        if all(ours[name] == theirs[name] for name in REDIS_DEFAULTS):
            return index, url
    return None


def _our_url_of(backend: Any) -> str | None:
    """The URL of the TaskPulse shard the backend writes to (None: not ours)."""
    target = _our_shard_of(backend)
    return None if target is None else target[1]


def _is_our_redis(backend: Any) -> bool:
    return _our_url_of(backend) is not None


def _runner(url: str) -> ScriptRunner:
    runners = _state.get().runners
    runner = runners.get(url)
    if runner is None:
        runner = runners[url] = ScriptRunner(url, lua.MIRROR)
    return runner


# -- Celery's update_state -> TaskPulse --------------------------------------------

# Marks Task.update_state once TaskPulse wraps it (a public attribute, so any code
# can tell, and install() stays idempotent however often it runs).
WRAPPED_MARKER = "taskpulse_streams"
# Celery's states that end a task: update_state(...) with one of them, then
# `raise Ignore()`, is Celery's documented way for a task to set its own outcome.
DECLARED_FINAL = {"SUCCESS": State.SUCCESS, "FAILURE": State.FAILURE, "REVOKED": State.REVOKED}
IGNORED = "IGNORED"

_install_lock = threading.Lock()
# task id -> (state, meta) a task running here gave update_state last, of DECLARED_FINAL
_declared: dict[str, tuple[str, Any]] = {}

UpdateState = Callable[..., None]


def install() -> None:
    """Wrap Celery's Task.update_state (once) and connect the hook that records a final
    state a task declared through it before `raise Ignore()`."""
    with _install_lock:
        original: UpdateState = Task.update_state
        if not getattr(original, WRAPPED_MARKER, False):
            Task.update_state = _streaming(original)  # type: ignore[method-assign]
    signals.task_postrun.connect(on_postrun, weak=False,
                                 dispatch_uid="taskpulse.interop.on_postrun")


def _streaming(original: UpdateState) -> UpdateState:
    @functools.wraps(original)
    def update_state(self: Task[Any, Any], task_id: str | None = None, state: str | None = None,
                     meta: dict[str, Any] | None = None, **kwargs: Any) -> None:
        try:
            original(self, task_id, state, meta, **kwargs)  # Celery's own backend write
        finally:
            stream_update_state(self, task_id, state, meta)

    setattr(update_state, WRAPPED_MARKER, True)
    return update_state


def stream_update_state(task: Any, task_id: str | None, state: str | None, meta: Any) -> None:
    """Send an update_state call to the watchers, through the task's reporter.

    PROGRESS and custom states become a progress update (`current`, `total`,
    `message`/`description`, `percent`; other keys go into `meta`, and a custom
    state's name into meta["state"]) with mirror=False: Celery has just written
    the backend. Celery's lifecycle states are the signal hooks' to record; a
    final one is remembered for a task that then raises Ignore. Only
    TaskCancelled (the task was cancelled) is raised; anything else is logged.
    """
    request = getattr(task, "request", None)
    running_id = getattr(request, "id", None)
    task_id = task_id or running_id
    if not task_id or not state or not is_tracked(getattr(task, "name", None), task):
        return
    try:
        state = str(state)
        if state in ALL_STATES:
            if task_id == running_id:
                if state in DECLARED_FINAL:
                    _declared[task_id] = (state, meta)
                else:
                    _declared.pop(task_id, None)
            return
        current, total, message, extra = progress_of(meta)
        if state != PROGRESS_STATE:
            extra = {"state": state, **{k: v for k, v in extra.items() if k != "state"}}
        reporter = track(task) if task_id == running_id else track(task_id)
        reporter.update(current, total, message, extra, mirror=False)
    except TaskCancelled:
        raise
    except Exception:
        logger.warning("TaskPulse could not stream update_state(%r) of task %s", state, task_id,
                       exc_info=True)


def progress_of(meta: Any) -> tuple[float | None, float | Keep | None, str | Keep | None,
                                    dict[str, Any]]:
    """(current, total, message, meta) for TaskProgress.update from update_state's meta.

    `current` and `total` are taken when they are numbers (`total` may be None:
    indeterminate); `percent` alone stands for current=percent of total=100,
    next to them it is dropped (the event derives its own); `message`, else
    `description`, is the message when it is a string or None. Everything
    else is the event's `meta`; a meta that is not a mapping is {"value": meta}.
    """
    if meta is None:
        fields: dict[str, Any] = {}
    elif isinstance(meta, Mapping):
        fields = {str(name): value for name, value in meta.items()}
    else:
        fields = {"value": meta}
    current: float | None = None
    total: float | Keep | None = KEEP
    message: str | Keep | None = KEEP
    if _is_number(fields.get("current")):
        current = _number(fields.pop("current"))
    if "total" in fields and (fields["total"] is None or _is_number(fields["total"])):
        raw_total = fields.pop("total")
        total = None if raw_total is None else _number(raw_total)
    if _is_number(fields.get("percent")):
        percent = _number(fields.pop("percent"))
        if current is None and total is KEEP:
            current, total = percent, 100
    for name in ("message", "description"):
        if name in fields and (fields[name] is None or isinstance(fields[name], str)):
            message = fields.pop(name)
            break
    return current, total, message, fields


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _number(value: Any) -> float:
    if type(value) is int or type(value) is float:
        return value
    return float(value)


def on_postrun(task_id: str | None = None, task: Any = None, state: str | None = None,
               **_: Any) -> None:
    """A task that declared its outcome with update_state and then raised Ignore ends with
    that outcome on the wire too (Celery sends no success or failure signal then)."""
    if not task_id:
        return
    declared = _declared.pop(task_id, None)
    if declared is None or state != IGNORED:
        return
    final_state, meta = declared
    try:
        publish(_declared_draft(task_id, final_state, meta))
    except Exception:
        logger.exception("TaskPulse could not record %s for task %s", final_state, task_id)


def _declared_draft(task_id: str, state: str, meta: Any) -> EventDraft:
    if state == "SUCCESS":
        return EventDraft(task_id, State.SUCCESS,
                          result_json=encode_json_value(meta, conf.result_max_bytes()))
    if state == "FAILURE":
        return EventDraft(task_id, State.FAILURE, error=_declared_error(meta))
    return EventDraft(task_id, State.REVOKED,
                      error={"type": "TaskRevokedError", "message": "task revoked"})


def _declared_error(meta: Any) -> ErrorInfo:
    """The error of a FAILURE a task declared: Celery's {"exc_type", "exc_message"} meta."""
    if isinstance(meta, Mapping) and "exc_type" in meta:
        message = meta.get("exc_message", "")
        if isinstance(message, list | tuple):
            message = ", ".join(str(part) for part in message)
        return {"type": str(meta["exc_type"]), "message": str(message)}
    return {"type": "Error", "message": meta if isinstance(meta, str) else safe_repr(meta)}
