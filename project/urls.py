"""URL configuration: the demo page, the HTTP API and the health check."""

from django.urls import path

from progress import views

urlpatterns = [
    path("", views.demo_page, name="demo"),
    path("api/tasks/", views.start_task, name="task-start"),
    path("api/tasks/<str:task_id>/", views.task_status, name="task-status"),
    path("api/tasks/<str:task_id>/cancel/", views.cancel_task, name="task-cancel"),
    path("healthz", views.healthz, name="healthz"),
]
