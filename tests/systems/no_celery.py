"""A site with Django-Q2 only, in a virtualenv without Celery (issue 12): the wheel
of this checkout installed with its `django-q` extra, a small site written here
(settings as docs/INTEGRATION.md's Django-Q2 section shows), `manage.py qcluster`
and stock daphne from that virtualenv, and a task enqueued with `async_task`.
"""

from __future__ import annotations

import signal
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tests import fresh_site, processes
from tests.fresh_site import clean_env, run

# Left out of the copy the wheel is built from, so the build never writes into
# the shared work tree.
INTEGRATION_FILE = "progress/integrations/django_q/signals.py"
QUEUE_LIBRARIES = ("celery", "kombu", "billiard")

SETTINGS = '''\
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "no-celery-site-" + "k" * 40
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django.contrib.staticfiles", "channels", "progress", "django_q", "jobs"]
ROOT_URLCONF = "nqsite.urls"
ASGI_APPLICATION = "nqsite.asgi.application"
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3",
                           "NAME": BASE_DIR / "db.sqlite3"}}}}
STATIC_URL = "/static/"
USE_TZ = True

TASKPULSE_REDIS_URL = {redis_url!r}
TASKPULSE_TASK_QUEUES = ["progress.integrations.django_q.DjangoQQueue"]
PROGRESS_KEY_PREFIX = {prefix!r}
Q_CLUSTER = {{"name": {cluster!r}, "redis": {redis_url!r}, "workers": 1,
              "timeout": 60, "retry": 120}}
'''

URLS = '''\
from django.urls import include, path

from progress.web.views import healthz

urlpatterns = [path("api/", include("progress.urls")), path("healthz", healthz)]
'''

ASGI = '''\
import os

from channels.routing import ProtocolTypeRouter
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nqsite.settings")
django_asgi_app = get_asgi_application()

from consumers.routing import websocket_application  # noqa: E402

application = ProtocolTypeRouter({"http": django_asgi_app,
                                  "websocket": websocket_application()})
'''

MANAGE = '''\
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nqsite.settings")
from django.core.management import execute_from_command_line

execute_from_command_line(sys.argv)
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
    venv = workdir / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=workdir, env=clean_env(venv / "bin"))
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
         f"{wheel}[django-q]"], cwd=workdir, env=clean_env(venv / "bin"))
    return venv


def make_site(workdir: Path, prefix: str, redis_url: str) -> Path:
    site = workdir / "site"
    files = {
        "manage.py": MANAGE,
        "nqsite/__init__.py": "",
        "nqsite/settings.py": SETTINGS.format(redis_url=redis_url, prefix=prefix,
                                              cluster=f"{prefix}-q"),
        "nqsite/urls.py": URLS,
        "nqsite/asgi.py": ASGI,
        "jobs/__init__.py": "",
        "jobs/tasks.py": TASKS,
    }
    for name, text in files.items():
        path = site / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return site


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
