"""Template tags that show a live task progress bar in a Django page.

`{% load taskpulse %}{% taskpulse_scripts %}` once per page, then
`{% task_progress task_id %}` per task: the element gets a fresh token. Or, with
htmx instead of TaskPulse's JavaScript, `{% taskpulse_sse_row task_id %}`.
"""

import uuid
from typing import Any
from urllib.parse import urlencode

from django import template
from django.templatetags.static import static
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from progress.tokens import WATCH_AND_CANCEL, WATCH_ONLY, issue_token
from progress.web.sse_html import event_name, render_row
from progress.wire.ids import is_valid_task_id
from progress.wire.objects import unknown_object

register = template.Library()

ELEMENT_SCRIPT = "taskpulse/task-progress.js"
STYLESHEET = "taskpulse/taskpulse.css"


@register.inclusion_tag("progress/task_progress.html")
def task_progress(task: Any, cancellable: bool = False, label: str = "",
                  queued_hint_after: float | None = None) -> dict[str, Any]:
    """A `<task-progress>` element for a task id (or AsyncResult) with a token to watch it.

    The token may cancel the task only when the page offers a cancel button
    (`cancellable=True`): tokens sit in the page for 24 h, and a watch-only one
    that leaks cannot stop anything.
    """
    task_id = _task_id_of(task)
    return {
        "task_id": task_id,
        "token": issue_token(task_id, WATCH_AND_CANCEL if cancellable else WATCH_ONLY),
        "cancellable": cancellable,
        "label": label,
        "queued_hint_after": queued_hint_after,
        # Named in the hint shown until the element runs: the file that did not load.
        "script_url": static(ELEMENT_SCRIPT),
    }


def _task_id_of(task: Any) -> str:
    # Accept what a view has at hand: the id string, a UUID, or Celery's AsyncResult.
    task_id = str(task) if isinstance(task, uuid.UUID) else getattr(task, "id", task)
    if not is_valid_task_id(task_id):
        raise ValueError(
            f"{{% task_progress %}} needs a Celery task id matching [A-Za-z0-9_.-]{{1,80}} "
            f"(or its AsyncResult), got {task!r}: pass the id of the task your view started"
        )
    return str(task_id)


@register.simple_tag
def taskpulse_scripts() -> SafeString:
    """The stylesheet and the module script that define `<task-progress>`."""
    return format_html(
        '<link rel="stylesheet" href="{}">\n<script type="module" src="{}"></script>',
        static(STYLESHEET),
        static(ELEMENT_SCRIPT),
    )


@register.inclusion_tag("progress/sse_task.html")
def taskpulse_sse_row(task: Any) -> dict[str, Any]:
    """A task's row kept up to date by htmx and its SSE extension (`hx-ext="sse"`), from
    the SSE stream's HTML format; the page loads htmx, not TaskPulse's JavaScript."""
    task_id = _task_id_of(task)
    query = urlencode({"task": task_id, "token": issue_token(task_id, WATCH_ONLY),
                       "format": "html"})
    return {"task_id": task_id, "event": event_name(task_id),
            "stream_url": f"{reverse('taskpulse:events')}?{query}",
            "row": render_row(unknown_object(task_id))}
