"""What the tests that build a brand-new site share: the wheel of this checkout, an
environment free of this test process's settings, and commands that must succeed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tests import processes

COMMAND_TIMEOUT = 240.0  # one command: pip install with its dependencies, startproject, ...
# What is left out of the copy of this checkout the wheel is built from: the
# build then never writes into the shared work tree.
NOT_SOURCE = (".git", ".venv*", "*_cache", ".grimp_cache", "__pycache__", "*.egg-info",
              "build", "dist", "node_modules", "test-results", "tests", "bench")
# Variables of this test process that must not leak into a new site's processes
# (conftest.py points DJANGO_SETTINGS_MODULE at project.settings).
PRIVATE_ENV = ("DJANGO_", "TASKPULSE_", "PROGRESS_", "CELERY_", "REDIS_", "PYTHON",
               "VIRTUAL_ENV", "PYTEST_", "Q_CLUSTER")


def clean_env(bin_dir: Path | None = None, /, **extra: str) -> dict[str, str]:
    """This process's environment without its Django/TaskPulse/Celery variables, with
    `bin_dir` (a virtualenv's) first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(PRIVATE_ENV)}
    if bin_dir is not None:
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run(argv: list[str], cwd: Path, env: dict[str, str],
        timeout: float = COMMAND_TIMEOUT) -> str:
    """Run a command that must succeed; its output."""
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, (
        f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def build_wheel(source: Path, out: Path) -> Path:
    """The wheel of this checkout, built as a user builds it (`pip wheel`, isolated
    build) from a copy at `source`, into `out`."""
    shutil.copytree(processes.ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    out.mkdir(parents=True, exist_ok=True)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(out),
         str(source)], cwd=out, env=clean_env())
    wheels = sorted(out.glob("taskpulse-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def make_venv(venv: Path, requirements: Sequence[str], python: str = sys.executable) -> Path:
    """A fresh virtualenv at `venv`, made by the interpreter `python`, with
    `requirements` (pip arguments: the wheel with its extras, version specifiers)
    installed in one resolve."""
    run([python, "-m", "venv", str(venv)], cwd=venv.parent, env=clean_env(venv / "bin"))
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *requirements],
        cwd=venv.parent, env=clean_env(venv / "bin"))
    return venv


# -- a small site around TaskPulse: settings, manage.py, asgi.py, urls.py, one app -----

SITE_SETTINGS = '''\
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "{package}-site-" + "k" * 40
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django.contrib.staticfiles", "channels", "progress", "jobs"]
ROOT_URLCONF = "{package}.urls"
ASGI_APPLICATION = "{package}.asgi.application"
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3",
                           "NAME": BASE_DIR / "db.sqlite3"}}}}
STATIC_URL = "/static/"
USE_TZ = True

TASKPULSE_REDIS_URL = {redis_url!r}
TASKPULSE_KEY_PREFIX = {prefix!r}

'''

SITE_URLS = '''\
from django.urls import include, path

from progress.web.views import healthz

urlpatterns = [path("api/", include("progress.urls")), path("healthz", healthz)]
'''

SITE_ASGI = '''\
import os

from channels.routing import ProtocolTypeRouter
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "{package}.settings")
django_asgi_app = get_asgi_application()

from consumers.routing import websocket_application  # noqa: E402

application = ProtocolTypeRouter({{"http": django_asgi_app,
                                  "websocket": websocket_application()}})
'''

SITE_MANAGE = '''\
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "{package}.settings")
from django.core.management import execute_from_command_line

execute_from_command_line(sys.argv)
'''


def write_site(site: Path, package: str, redis_url: str, prefix: str, settings: str,
               tasks: str) -> Path:
    """A site at `site` on TaskPulse's Redis `redis_url` with the key prefix `prefix`:
    `manage.py`; the project package `package`, its settings SQLite and the `progress`
    app followed by `settings` (the task system's), TaskPulse's HTTP API under `api/`
    (and `/healthz`) and its WebSocket in `asgi.py`; an app `jobs` with `tasks`."""
    base = SITE_SETTINGS.format(package=package, redis_url=redis_url, prefix=prefix)
    files = {
        "manage.py": SITE_MANAGE.format(package=package),
        f"{package}/__init__.py": "",
        f"{package}/settings.py": base + settings,
        f"{package}/urls.py": SITE_URLS,
        f"{package}/asgi.py": SITE_ASGI.format(package=package),
        "jobs/__init__.py": "",
        "jobs/tasks.py": tasks,
    }
    for name, text in files.items():
        path = site / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return site
