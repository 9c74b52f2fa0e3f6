"""A brand-new Django 6 site on Django's own tasks framework (`django.tasks`, no
`django-tasks` backport): the wheel of this checkout in a virtualenv of a Python
>= 3.12 found on this machine, `django-tasks-db`'s database backend and its
`manage.py db_worker`, settings as docs/INTEGRATION.md's tasks-framework section shows.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests import fresh_site
from tests.client import Ws, connect
from tests.systems.harness import Frames

MIN_PYTHON = (3, 12)  # what Django 6 requires
# An interpreter named here is tried first (e.g. a CI image's own 3.12).
PYTHON_VARIABLE = "TEST_DJANGO6_PYTHON"
PYTHON_NAMES = ("python3.14", "python3.13", "python3.12")
PYTHON_GLOBS = (
    "~/.pyenv/versions/3.1[2-9]*/bin/python3",
    "~/.local/share/uv/python/cpython-3.1[2-9]*/bin/python3",
    "/usr/local/bin/python3.1[2-9]",
    "/usr/bin/python3.1[2-9]",
    "/opt/python/3.1[2-9]*/bin/python3",
)
PROBE_TIMEOUT = 20.0
# Runs under the candidate: its version, and whether it can make a virtualenv with pip
# (a Debian python3.12 without python3.12-venv has `venv` but no `ensurepip`).
PROBE = "import ensurepip, sys, venv; print(*sys.version_info[:2])"
REQUIREMENTS = ("django>=6,<7", "django-tasks-db")  # next to the wheel, no extra
BACKPORT = "django_tasks"  # must not be importable: Django's own framework runs

SITE_PACKAGE = "d6site"
STEPS = 4
STEP_SECONDS = 0.15  # longer than TASKPULSE_MIN_INTERVAL: every step is published
FAILURE_MESSAGE = "gave up after {n} items"
WATCH_TIMEOUT = 60.0

# After fresh_site.SITE_SETTINGS: docs/INTEGRATION.md, "Django's tasks framework", as
# on Django 6 (Django's own framework: no "django_tasks" app).
SETTINGS = '''\
INSTALLED_APPS += ["django_tasks_db"]
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
TASKPULSE_TASK_QUEUES = ["progress.integrations.django_tasks.DjangoTasksQueue"]
'''

TASKS = f'''\
import time

from django.tasks import task

from progress.publisher import track

STEP_SECONDS = {STEP_SECONDS!r}


class CountFailed(Exception):
    """The site's own error."""


def count_with(progress, n):
    for i in range(1, n + 1):
        time.sleep(STEP_SECONDS)
        progress.update(i, total=n, message=f"item {{i}}")


@task
def count(n):
    count_with(track(), n)  # the running task, found by itself
    return {{"counted": n}}


@task
def count_then_fail(n):
    count_with(track(), n)
    raise CountFailed({FAILURE_MESSAGE!r}.format(n=n))


@task(takes_context=True)
def count_in_context(context, n):
    progress = track(context)
    count_with(progress, n)
    return {{"counted": n, "reporter": progress.task_id, "attempt": context.attempt}}
'''

# Enqueues one task of each kind the tasks framework's way, and says what runs them.
ENQUEUE = f'''\
import importlib.util
import json
import sys

import django

django.setup()
import progress
from jobs.tasks import count, count_in_context, count_then_fail
from progress import taskqueue
from progress.integrations.django_tasks.framework import frameworks
from progress.tokens import issue_token

n = int(sys.argv[1])
results = {{"success": count.enqueue(n), "failure": count_then_fail.enqueue(n),
            "context": count_in_context.enqueue(n)}}
print(json.dumps({{
    "django": django.get_version(),
    "backport_importable": importlib.util.find_spec({BACKPORT!r}) is not None,
    "frameworks": [module.__name__ for module in frameworks()],
    "task_class": type(count).__module__ + "." + type(count).__qualname__,
    "queues": [queue.name for queue in taskqueue.enabled()],
    "progress": progress.__file__,
    "tasks": {{kind: {{"id": str(result.id), "token": issue_token(str(result.id)),
                      "name": result.task.module_path}}
              for kind, result in results.items()}},
}}))
'''


def python_version(python: str) -> tuple[int, int] | None:
    """The version of the interpreter `python`, if it runs and can make a virtualenv."""
    try:
        done = subprocess.run([python, "-c", PROBE], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT, env=fresh_site.clean_env())
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:  # e.g. a pyenv shim of a version that is not selected
        return None
    major, minor = done.stdout.strip().splitlines()[-1].split()
    return int(major), int(minor)


def python_candidates() -> list[str]:
    named = [os.environ.get(PYTHON_VARIABLE, ""),
             *(shutil.which(name) or "" for name in PYTHON_NAMES)]
    found = [path for pattern in PYTHON_GLOBS
             for path in sorted(glob.glob(os.path.expanduser(pattern)))]
    return list(dict.fromkeys(path for path in [*named, *found] if path))


def find_python() -> tuple[str | None, list[str]]:
    """A Python >= MIN_PYTHON that makes virtualenvs, and every candidate tried."""
    tried = python_candidates()
    for python in tried:
        version = python_version(python)
        if version is not None and version >= MIN_PYTHON:
            return python, tried
    return None, tried


def make_venv(workdir: Path, wheel: Path, python: str) -> Path:
    """The wheel with Django 6 and django-tasks-db, nothing else asked for."""
    return fresh_site.make_venv(workdir / "venv", [str(wheel), *REQUIREMENTS], python)


def make_site(workdir: Path, prefix: str, redis_url: str) -> Path:
    return fresh_site.write_site(workdir / "site", SITE_PACKAGE, redis_url, prefix, SETTINGS,
                                 TASKS)


def db_worker_argv(python: str) -> list[str]:
    return [python, "manage.py", "db_worker", "--no-reload", "--no-startup-delay",
            "--interval", "0.1"]


async def watch_all(url: str, tokens: dict[str, str], when_subscribed: Callable[[], object],
                    timeout: float = WATCH_TIMEOUT) -> dict[str, Frames]:
    """Subscribe to every task (id -> token) on one WebSocket; once each has answered
    with its snapshot, call `when_subscribed`; collect each task's frames up to its
    final one."""
    frames: dict[str, Frames] = {task_id: [] for task_id in tokens}
    async with connect(url) as conn:
        ws = Ws(conn)
        for task_id, token in tokens.items():
            await ws.subscribe(task_id, token)
        subscribed = False
        async with asyncio.timeout(timeout):
            while not all(seen and seen[-1].get("final") for seen in frames.values()):
                frame = await ws.recv(timeout)
                watched = frames.get(str(frame.get("task_id")))
                if watched is not None:
                    watched.append(frame)
                if not subscribed and all(frames.values()):
                    subscribed = True
                    when_subscribed()
    return frames
