"""The HTML format of the SSE stream (`&format=html`, for htmx's SSE extension): each
task object becomes `event: task-<id>` with its row re-rendered as the `data:` lines.

The row is the template ROW_TEMPLATE (autoescaped; a host overrides it by putting
its own `progress/sse_task_row.html` earlier in its template path).
"""

from __future__ import annotations

from typing import Any

from django.template.loader import render_to_string

from progress.wire.types import TaskObject

ROW_TEMPLATE = "progress/sse_task_row.html"


def event_name(task_id: str) -> str:
    """The SSE event a task's rows arrive as (what `sse-swap` names)."""
    return f"task-{task_id}"


def row_context(task: TaskObject) -> dict[str, Any]:
    percent = task["progress"]["percent"]
    return {"task": task, "percent": None if percent is None else round(percent)}


def render_row(task: TaskObject) -> str:
    return render_to_string(ROW_TEMPLATE, row_context(task))


def html_lines(kind: str, _frame: str, task: TaskObject | None) -> str | None:
    """A task object's row as SSE lines; other frames (resumed, error) show nothing."""
    if task is None:
        return None
    data = "".join(f"data: {line}\n" for line in render_row(task).splitlines() or [""])
    return f"event: {event_name(task['task_id'])}\n{data}"
