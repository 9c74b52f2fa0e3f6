"""TaskPulse's HTTP API (PROTOCOL.md §6) and health check, for `include()`:

    path("", include("progress.urls"))          # /api/tasks/..., /healthz
    path("progress/", include("progress.urls")) # /progress/api/tasks/...

The WebSocket routes are in consumers.routing.
"""

from django.urls import path

from progress.web import views

app_name = "taskpulse"

urlpatterns = [
    path("api/tasks/", views.start_task, name="task-start"),
    path("api/tasks/<str:task_id>/", views.task_status, name="task-status"),
    path("api/tasks/<str:task_id>/cancel/", views.cancel_task, name="task-cancel"),
    path("healthz", views.healthz, name="healthz"),
]
