"""Celery internals the integration relies on, behind a guard (progress/compat.py:
their attributes and the signatures of the calls made): the current task and
app without Celery's thread-following proxies, and the backend's result meta,
which the AsyncResult mirror writes itself in the record script's round trip.

When a release removed or changed any of them (or TASKPULSE_UNTESTED names
celery or kombu), the public paths run: the `current_task`/`current_app`
proxies, and the mirror through the backend's own `store_result` (one more
round trip per mirrored call).
"""

from __future__ import annotations

from typing import Any

from progress import compat

CELERY_STATE = compat.Guard(
    name="Celery's current task, app and result meta without proxies",
    fallback="Celery's public current_task/current_app proxies, and the AsyncResult "
             "mirror through the backend's store_result (a round trip of its own)",
    distributions=("celery", "kombu"),
    requires=(
        "celery._state:get_current_task",
        "celery._state:get_current_app",
        "celery.backends.base:BaseBackend._get_result_meta",
    ),
    calls=(
        ("celery._state:get_current_task", ""),
        ("celery._state:get_current_app", ""),
        # progress/integrations/celery/interop.py builds the meta with these keywords
        ("celery.backends.base:BaseBackend._get_result_meta",
         "self, result=, state=, traceback=, request="),
    ),
)


def current_task() -> Any:
    """The Celery task running in this thread, or None. Not the `current_task` proxy
    when the guard allows: the reporter keeps its task for later (trailing) writes,
    and the proxy follows whichever thread looks at it then."""
    if compat.enabled(CELERY_STATE):
        from celery._state import get_current_task

        return get_current_task()
    from celery import current_task as proxy

    return proxy if proxy else None


def current_app() -> Any:
    if compat.enabled(CELERY_STATE):
        from celery._state import get_current_app

        return get_current_app()
    from celery import current_app as proxy

    return proxy


def result_meta_is_ours_to_write() -> bool:
    """Whether the mirror may build Celery's result meta itself (`_get_result_meta`)."""
    return compat.enabled(CELERY_STATE)
