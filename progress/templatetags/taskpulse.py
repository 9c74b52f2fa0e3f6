"""Template tags that show a live task progress bar in a Django page.

`{% load taskpulse %}{% taskpulse_scripts %}` once per page, then
`{% task_progress task_id %}` per task: the element gets a fresh token.
"""

import uuid
from typing import Any

from django import template
from django.templatetags.static import static
from django.utils.html import format_html
from django.utils.safestring import SafeString

from progress.tokens import DEFAULT_PERMISSIONS, Permission, issue_token
from progress.wire.ids import is_valid_task_id

register = template.Library()

WATCH_ONLY = frozenset({Permission.WATCH})
ELEMENT_SCRIPT = "taskpulse/task-progress.js"
STYLESHEET = "taskpulse/taskpulse.css"


@register.inclusion_tag("progress/task_progress.html")
def task_progress(task: Any, cancellable: bool = True, label: str = "") -> dict[str, Any]:
    """A `<task-progress>` element for a task id (or AsyncResult) with a token to watch it."""
    task_id = _task_id_of(task)
    permissions = DEFAULT_PERMISSIONS if cancellable else WATCH_ONLY
    return {
        "task_id": task_id,
        "token": issue_token(task_id, permissions),
        "cancellable": cancellable,
        "label": label,
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
