"""A site with Django-Q2 only, in a virtualenv without Celery (issue 12): the wheel
of this checkout installed with its `django-q` extra, a small site written here
(settings as docs/INTEGRATION.md's Django-Q2 section shows), `manage.py qcluster`
and stock daphne from that virtualenv, and a task enqueued with `async_task`.
"""

from __future__ import annotations

import signal
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tests import fresh_site, processes

# Left out of the copy the wheel is built from, so the build never writes into
# the shared work tree.
INTEGRATION_FILE = "progress/integrations/django_q/signals.py"
QUEUE_LIBRARIES = ("celery", "kombu", "billiard")

# After fresh_site.SITE_SETTINGS: docs/INTEGRATION.md's Django-Q2 settings.
SETTINGS = '''\
INSTALLED_APPS += ["django_q"]
TASKPULSE_TASK_QUEUES = ["progress.integrations.django_q.DjangoQQueue"]
Q_CLUSTER = {{"name": {cluster!r}, "redis": {redis_url!r}, "workers": 1,
              "timeout": 60, "retry": 120}}
'''

TASKS = '''\
import time

from progress.publisher import track


def count(n):
    progress = track()  # the running Django-Q2 task
    for i in range(1, n + 1):
        time.sleep(0.05)
        progress.update(i, total=n, message=f"item {i}")
    return {"counted": n}
'''

# Enqueues the task the Django-Q2 way and says what this process imported.
ENQUEUE = '''\
import importlib.util
import json
import sys

import django

django.setup()
from django_q.tasks import async_task

from progress import taskqueue
from progress.tokens import issue_token

QUEUE_LIBRARIES = ("celery", "kombu", "billiard")
task_id = async_task("jobs.tasks.count", 4)
print(json.dumps({
    "id": task_id, "token": issue_token(task_id),
    "celery_installed": importlib.util.find_spec("celery") is not None,
    "loaded": sorted(m for m in sys.modules if m.split(".")[0] in QUEUE_LIBRARIES),
    "queues": [queue.name for queue in taskqueue.enabled()],
    "progress": __import__("progress").__file__,
}))
'''


def build_wheel(workdir: Path) -> Path:
    """The wheel of this checkout, with the Django-Q2 integration in it."""
    wheel = fresh_site.build_wheel(workdir / "source", workdir / "wheelhouse")
    with zipfile.ZipFile(wheel) as contents:
        assert INTEGRATION_FILE in contents.namelist(), (
            "the wheel lacks progress.integrations.django_q: list the integration "
            "packages in [tool.setuptools] packages of pyproject.toml")
    return wheel


def make_venv(workdir: Path, wheel: Path) -> Path:
    """A fresh virtualenv with `taskpulse[django-q]` from the wheel: no Celery."""
    return fresh_site.make_venv(workdir / "venv", [f"{wheel}[django-q]"])


def make_site(workdir: Path, prefix: str, redis_url: str) -> Path:
    settings = SETTINGS.format(redis_url=redis_url, cluster=f"{prefix}-q")
    return fresh_site.write_site(workdir / "site", "nqsite", redis_url, prefix, settings, TASKS)


@dataclass
class SiteProc(processes.Proc):
    """A process of the site (run in its directory: `cwd`); a cluster stops cleanly."""

    cluster: bool = False  # a Django-Q2 cluster: stopped through its main process

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.cluster and sig == signal.SIGTERM:
            from tests.systems.harness import stop_cluster

            stop_cluster(self)
        else:
            super().stop(sig)
