"""The task-author API and the one place this process publishes events.

    from progress.publisher import track

    @app.task(bind=True)
    def export(self, rows):
        progress = track(self)
        for i, row in enumerate(rows, 1):
            write(row)
            progress.update(i, total=len(rows), message=f"row {i}")

A published event is one EVALSHA on a connection the process keeps open to
the task's shard (progress/store/shards.py); progress calls are throttled
(progress/publisher/reporter.py), so a hot loop may call them freely. Lifecycle states
(STARTED, SUCCESS, ...) are published by progress.integrations.celery.signals without the task
doing anything. docs/API.md has the rest.

One job per module, calls going one way (this package only re-exports them):
track.py (the author's API) -> publish.py (the pipeline) -> recording.py (the
record script, through the outbox) -> finals.py (finals kept for re-checks);
context.py is the running task `track()` finds, reporters.py the reporters of
this process's tasks, heartbeat.py the thread that keeps them alive.
"""

from progress.publisher.context import (
    NO_RUNNING_TASK,
    NoRunningTask,
    RunningTask,
    TaskScope,
    carry,
    enter_task,
    running_task,
)
from progress.publisher.publish import forget, note_group, publish
from progress.publisher.recording import publish_many
from progress.publisher.reporter import KEEP, Keep, TaskCancelled, TaskProgress
from progress.publisher.track import current_progress, track, with_progress
from progress.store.process_store import store
from progress.store.records import EventDraft

__all__ = [
    "KEEP", "NO_RUNNING_TASK", "EventDraft", "Keep", "NoRunningTask", "RunningTask",
    "TaskCancelled", "TaskProgress", "TaskScope", "carry", "current_progress", "enter_task",
    "forget", "note_group", "publish", "publish_many", "running_task", "store", "track",
    "with_progress",
]
