"""App config: connects the enabled task systems' hooks once Django is ready."""

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class ProgressConfig(AppConfig):
    name = "progress"
    verbose_name = "TaskPulse progress"

    def ready(self) -> None:
        from progress import taskqueue

        taskqueue.install()
        # The web process imports every app's tasks.py too: startable tasks
        # register themselves on import, and the API can only start those.
        autodiscover_modules("tasks")
