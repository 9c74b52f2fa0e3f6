"""TaskPulse's URLs plus celery-progress's polling endpoint (benchmark only)."""

from django.urls import include, path

from project.urls import urlpatterns as taskpulse_urlpatterns

urlpatterns = [
    *taskpulse_urlpatterns,
    path("celery-progress/", include("celery_progress.urls")),
]
