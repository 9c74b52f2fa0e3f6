"""The example site's URLs: the demo page (and its htmx variant at /htmx/),
TaskPulse's HTTP API under /api/ and the health check at /healthz, where
PROTOCOL.md §6 places them."""

from django.urls import include, path

from progress.web import views as api
from project.demo import views

urlpatterns = [
    path("", views.demo_page, name="demo"),
    path("htmx/", views.htmx_page, name="demo-htmx"),
    path("api/", include("progress.urls")),
    path("healthz", api.healthz, name="healthz"),
]
