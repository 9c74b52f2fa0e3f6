"""App config: connects the enabled task systems' hooks once Django is ready."""

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class ProgressConfig(AppConfig):
    name = "progress"
    verbose_name = "TaskPulse progress"

    def ready(self) -> None:
        from progress.import_names import check_import_names

        # First: with another distribution's `progress` in the same folder, the
        # modules imported below may be its files, failing with a confusing error.
        check_import_names()

        from progress import taskqueue
        from progress.key_strength import check_token_keys

        check_token_keys()  # a weak token key outside DEBUG: refused, saying how to make one
        taskqueue.install()
        # The web process imports every app's tasks.py too: startable tasks
        # register themselves on import, and the API can only start those.
        autodiscover_modules("tasks")
