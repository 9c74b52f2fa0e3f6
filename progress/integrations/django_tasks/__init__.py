"""Django's tasks framework behind TaskPulse's task-queue interface: `django.tasks`
on Django 6, the `django-tasks` backport on Django 5.2 (with a backend such as
`django-tasks-db`'s database backend and its `db_worker`). Lifecycle from the
framework's signals (signals.py); `@task` objects the HTTP API may start (queue.py).

Enable it with
`TASKPULSE_TASK_QUEUES = [..., "progress.integrations.django_tasks.DjangoTasksQueue"]`
(docs/INTEGRATION.md, "Django-Q2 and Django's tasks framework").
"""

from progress.integrations.django_tasks.queue import DjangoTasksQueue

__all__ = ["DjangoTasksQueue"]
