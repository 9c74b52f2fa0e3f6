"""Settings for the celery-progress comparison server: TaskPulse's, plus celery_progress."""

from project.settings import *  # noqa: F403
from project.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "celery_progress"]
ROOT_URLCONF = "bench.polling_urls"
