"""The example site's URLs: the demo page, then TaskPulse's HTTP API at the root
(/api/tasks/..., /healthz), as PROTOCOL.md §6 places it."""

from django.urls import include, path

from project.demo import views

urlpatterns = [
    path("", views.demo_page, name="demo"),
    path("", include("progress.urls")),
]
