"""TaskPulse's HTTP API (PROTOCOL.md §6) and health check, for `include()`:

    path("api/", include("progress.urls"))       # /api/tasks/..., /api/healthz
    path("progress/", include("progress.urls"))  # /progress/tasks/...

`events/` is the Server-Sent Events stream (progress/web/sse.py). The WebSocket
routes are in consumers.routing.
"""

from django.urls import path

from progress.web import sse, views

app_name = "taskpulse"

urlpatterns = [
    path("tasks/", views.start_task, name="task-start"),
    path("tasks/<str:task_id>/", views.task_status, name="task-status"),
    path("tasks/<str:task_id>/cancel/", views.cancel_task, name="task-cancel"),
    path("events/", sse.events, name="events"),
    path("healthz", views.healthz, name="healthz"),
]
