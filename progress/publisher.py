"""The task-author API: report progress from inside a Celery task.

    from progress.publisher import track

    @app.task(bind=True)
    def export(self, rows):
        progress = track(self)
        for i, row in enumerate(rows, 1):
            write(row)
            progress.update(i, total=len(rows), message=f"row {i}")

Each published call is one Redis round trip on a connection the process
keeps open. Lifecycle states (STARTED, SUCCESS, ...) are published by
progress.signals without the task doing anything.
"""

import threading
from typing import Any, Protocol

from progress import conf
from progress.encoding import encode_json_value
from progress.redis_client import sync_client
from progress.states import State
from progress.store import EventDraft, PublishOutcome, RecordStore, progress_fragment


class TaskCancelled(Exception):
    """Raised by a progress call once someone cancelled the task.

    Catch it to clean up; let it propagate and the task ends as REVOKED.
    """


class _BoundTask(Protocol):
    @property
    def request(self) -> Any: ...

    @property
    def name(self) -> str: ...


_stores: dict[int, RecordStore] = {}


def store() -> RecordStore:
    """This process's record store, on its persistent connection."""
    client = sync_client()
    found = _stores.get(id(client))
    if found is None:
        _stores.clear()
        found = _stores[id(client)] = RecordStore(client)
    return found


def publish(draft: EventDraft) -> PublishOutcome:
    return store().publish(draft)


class TaskProgress:
    """Progress of one task; thread-safe, so worker threads inside a task may share it."""

    def __init__(self, task_id: str, name: str | None = None) -> None:
        self.task_id = task_id
        self.name = name
        self.current: float = 0
        self.total: float | None = None
        self.message: str | None = None
        self.meta_json = "{}"
        self._lock = threading.Lock()

    def update(
        self,
        current: float | None = None,
        total: float | None = None,
        message: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Set absolute progress; arguments left out keep their last value."""
        with self._lock:
            if current is not None:
                self.current = current
            if total is not None:
                self.total = total
            self._publish_locked(message, meta)

    def advance(
        self, by: float = 1, message: str | None = None, meta: dict[str, Any] | None = None
    ) -> None:
        """Add `by` to the current progress."""
        with self._lock:
            self.current += by
            self._publish_locked(message, meta)

    def _publish_locked(self, message: str | None, meta: dict[str, Any] | None) -> None:
        if message is not None:
            self.message = str(message)
        if meta is not None:
            self.meta_json = _encode_meta(meta)
        fragment = progress_fragment(self.current, self.total, self.message, None, self.meta_json)
        outcome = publish(
            EventDraft(self.task_id, State.PROGRESS, self.name, progress_fragment=fragment)
        )
        if outcome.cancel_requested:
            raise TaskCancelled(f"task {self.task_id} was cancelled")


def _encode_meta(meta: dict[str, Any]) -> str:
    if not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict of JSON values, not {type(meta).__name__}")
    return encode_json_value(meta, conf.meta_max_bytes())


_reporters: dict[str, TaskProgress] = {}
_reporters_lock = threading.Lock()


def track(task: _BoundTask | str) -> TaskProgress:
    """The progress reporter of a bound task (`self`) or of a task id.

    The same object is returned for the same task id within a process, so a
    helper function that only knows the id continues where the task left off.
    """
    if isinstance(task, str):
        task_id, name = task, None
    else:
        task_id, name = task.request.id, task.name
        if not task_id:
            raise ValueError("track(self) needs a running task: self.request.id is empty")
    with _reporters_lock:
        reporter = _reporters.get(task_id)
        if reporter is None:
            reporter = _reporters[task_id] = TaskProgress(task_id, name)
    return reporter


def forget(task_id: str) -> None:
    """Drop a finished task's reporter (called when the task ends)."""
    with _reporters_lock:
        _reporters.pop(task_id, None)
