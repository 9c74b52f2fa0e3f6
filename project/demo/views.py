"""The demo page: start the demo task (PROTOCOL.md §7) on each task system the
site enables, and watch them side by side; and the htmx page, which shows one
with htmx and its SSE extension instead of TaskPulse's JavaScript."""

import uuid
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_http_methods

from progress.control import ratelimit, startable
from progress.taskqueue.unavailable import QueueUnavailable
from progress.web.views import client_of
from project.demo.systems import demo_choices


@require_GET
@ensure_csrf_cookie
def demo_page(request: HttpRequest) -> HttpResponse:
    return render(request, "demo/index.html", {"systems": demo_choices()})


# The htmx page's task: the demo task, a few seconds long.
HTMX_TASK = "demo.count"
HTMX_STEPS, HTMX_DELAY = 10, 0.3


@require_http_methods(["GET", "POST"])
def htmx_page(request: HttpRequest) -> HttpResponse:
    """A task shown with htmx and its SSE extension only (no TaskPulse JavaScript): the
    form starts the demo task, and the answer shows its row, kept live by the SSE
    stream's HTML format ({% taskpulse_sse_row %})."""
    context: dict[str, Any] = {"steps": HTMX_STEPS}
    if request.method == "POST":
        started = _start_demo_task(request)
        context.update(started)
    return render(request, "demo/htmx.html", context, status=context.get("status", 200))


def _start_demo_task(request: HttpRequest) -> dict[str, Any]:
    """Start the demo task as POST /api/tasks/ would (same rate limit); its id, or an error."""
    entry = startable.lookup(HTMX_TASK)
    if entry is None:
        return {"error": f"{HTMX_TASK} is not startable on this site", "status": 503}
    wait = ratelimit.hit(ratelimit.Action.START, client_of(request))
    if wait is not None:
        return {"error": f"Too many tasks started; try again in {wait}s.", "status": 429}
    task_id = str(uuid.uuid4())
    try:
        entry.start([], {"steps": HTMX_STEPS, "delay": HTMX_DELAY}, task_id)
    except QueueUnavailable:
        return {"error": "The task queue is unavailable; try again shortly.", "status": 503}
    return {"task_id": task_id}
