"""Django-Q2 behind TaskPulse's task-queue interface: each task's lifecycle from
Django-Q2's signals (signals.py), tasks the HTTP API may start (`QTask`, queue.py).

Enable it with
`TASKPULSE_TASK_QUEUES = [..., "progress.integrations.django_q.DjangoQQueue"]`
(docs/INTEGRATION.md, "Django-Q2 and Django's tasks framework").
"""

from progress.integrations.django_q.queue import DjangoQQueue, QTask, q_task

__all__ = ["DjangoQQueue", "QTask", "q_task"]
