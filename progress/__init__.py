"""TaskPulse's Django app: the Redis record store, the publisher API for task
authors, Celery signal hooks, tokens and the HTTP API."""

from typing import Any


def __getattr__(name: str) -> Any:
    # progress.watch / progress.awatch (progress/watching.py), imported on first use:
    # importing the app package must not load the record store.
    if name in ("watch", "awatch"):
        from progress import watching

        return getattr(watching, name)
    raise AttributeError(f"module 'progress' has no attribute {name!r}")
