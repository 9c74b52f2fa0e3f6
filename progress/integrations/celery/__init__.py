"""Celery behind TaskPulse's task-queue interface: lifecycle from Celery's signals
(signals.py), the AsyncResult mirror and `update_state` capture (interop.py),
groups and chords watched as one id (groups.py)."""

from progress.integrations.celery.queue import CeleryQueue

__all__ = ["CeleryQueue"]
