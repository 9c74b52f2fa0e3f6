"""The example site's task systems, side by side: Celery, Django-Q2 and Django's
tasks framework (`django-tasks` + `django-tasks-db` on Django 5.2).

`TASKPULSE_SYSTEMS` (environment; comma-separated from `celery`, `django_q`,
`django_tasks`) says which the site enables; by default every one whose
packages are installed. project/settings.py applies `settings_for(...)`:
the apps, the database Django-Q2 and the tasks framework keep their tasks in
(SQLite; `TASKPULSE_DEMO_DB`), `Q_CLUSTER` on the site's Redis, `TASKS` with
the database backend, and `TASKPULSE_TASK_QUEUES`.

The Procfile starts each system's worker through this module,
`python -m project.demo.systems django_q|django_tasks`: it applies the
database migrations (once, whichever worker comes first), then runs
`manage.py qcluster` or `manage.py db_worker`; for a system the site does not
enable it says so and idles, so `scripts/dev` runs whatever is configured.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

CELERY = "celery"
DJANGO_Q = "django_q"
DJANGO_TASKS = "django_tasks"
SYSTEMS = (CELERY, DJANGO_Q, DJANGO_TASKS)
LABELS = {CELERY: "Celery", DJANGO_Q: "Django-Q2", DJANGO_TASKS: "Django tasks"}
INTEGRATIONS = {
    CELERY: "progress.integrations.celery.CeleryQueue",
    DJANGO_Q: "progress.integrations.django_q.DjangoQQueue",
    DJANGO_TASKS: "progress.integrations.django_tasks.DjangoTasksQueue",
}
# The demo task's name on each system (what POST /api/tasks/ starts).
DEMO_TASKS = {
    CELERY: "demo.count",
    DJANGO_Q: "project.demo.tasks_django_q.count",
    DJANGO_TASKS: "project.demo.tasks_django_tasks.count",
}
DEMO_MODULES = {DJANGO_Q: "project.demo.tasks_django_q",
                DJANGO_TASKS: "project.demo.tasks_django_tasks"}
# Django-Q2's cluster may hold a demo task this long (its longest run, §7, and a margin).
Q_TIMEOUT = 660


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def tasks_framework_backport() -> bool:
    """Whether the tasks framework comes from the backport (Django 5.2), not Django."""
    return not _has("django.tasks")


def installed(system: str) -> bool:
    if system == DJANGO_TASKS:
        return _has("django_tasks_db") and (_has("django.tasks") or _has("django_tasks"))
    return _has(system)


def enabled_systems(environ: Mapping[str, str] = os.environ) -> list[str]:
    raw = environ.get("TASKPULSE_SYSTEMS")
    if raw is None:
        return [system for system in SYSTEMS if installed(system)]
    wanted = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(SYSTEMS))
    if unknown:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            f"TASKPULSE_SYSTEMS names {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    return [system for system in SYSTEMS if system in wanted]


def database_path(prefix: str, environ: Mapping[str, str] = os.environ) -> str:
    return environ.get("TASKPULSE_DEMO_DB") or str(
        Path(tempfile.gettempdir()) / f"taskpulse-demo-{prefix}.sqlite3")


def settings_for(installed_apps: list[str], redis: Any, prefix: str,
                 environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The settings enabling the site's task systems (apply them to the settings
    module's globals). Idempotent: applied twice, nothing is added twice.

    `redis` is the site's first Redis server (a URL, or a Sentinel entry, which
    Django-Q2 cannot follow: it then uses TASKPULSE_Q_REDIS_URL, else the default).
    """
    systems = enabled_systems(environ)
    redis_url = redis if isinstance(redis, str) else environ.get(
        "TASKPULSE_Q_REDIS_URL", "redis://127.0.0.1:6379/0")
    apps = list(installed_apps)

    def add(app: str) -> None:
        if app not in apps:
            apps.append(app)

    values: dict[str, Any] = {
        "TASKPULSE_SYSTEMS": systems,
        "TASKPULSE_TASK_QUEUES": [INTEGRATIONS[system] for system in systems],
    }
    if DJANGO_Q in systems:
        add("django_q")
        workers = int(environ.get("TASKPULSE_Q_WORKERS", "2"))
        values["Q_CLUSTER"] = {
            # Also the signing prefix of the task packages: one name per site.
            "name": f"{prefix}-q",
            "redis": redis_url,
            "workers": workers,
            "queue_limit": workers,  # tasks a cluster takes ahead of its workers
            "timeout": Q_TIMEOUT,
            "retry": Q_TIMEOUT + 60,
            "max_attempts": 1,
            "save_limit": 100,
            "catch_up": False,
            "label": "Django Q2",
        }
    if DJANGO_TASKS in systems:
        if tasks_framework_backport():
            add("django_tasks")
        add("django_tasks_db")
        values["TASKS"] = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend",
                                       "QUEUES": ["default"]}}
    if DJANGO_Q in systems or DJANGO_TASKS in systems:
        values["DATABASES"] = {"default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": database_path(prefix, environ),
            # Web, cluster and worker write at once: wait for the lock, write-ahead log.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE",
                        "init_command": "PRAGMA journal_mode=WAL;"},
        }}
    values["INSTALLED_APPS"] = apps
    return values


TaskDecorator = Callable[..., Callable[[Callable[..., Any]], Any]]


def task_decorator() -> TaskDecorator:
    """The tasks framework's `@task(...)`: Django's own (6.0+), else the backport's."""
    module = importlib.import_module("django_tasks" if tasks_framework_backport()
                                     else "django.tasks")
    decorator: TaskDecorator = module.task
    return decorator


# -- the demo page and tasks ---------------------------------------------------------


def active_systems() -> list[str]:
    """The systems whose integration this process enabled (TASKPULSE_TASK_QUEUES)."""
    from progress import taskqueue

    names = {queue.name for queue in taskqueue.enabled()}
    return [system for system in SYSTEMS if system in names]


def import_demo_tasks() -> None:
    """Register the demo task on every enabled system besides Celery."""
    for system in active_systems():
        if system in DEMO_MODULES:
            importlib.import_module(DEMO_MODULES[system])


def demo_choices() -> list[dict[str, str]]:
    """The demo page's systems: those enabled whose demo task is registered."""
    from progress.control import startable

    return [{"system": system, "label": LABELS[system], "task": DEMO_TASKS[system]}
            for system in active_systems() if startable.lookup(DEMO_TASKS[system]) is not None]


# -- the workers (Procfile) ----------------------------------------------------------

WORKER_COMMANDS = {
    DJANGO_Q: ["qcluster"],
    DJANGO_TASKS: ["db_worker", "--no-reload", "--no-startup-delay", "--interval", "0.2"],
}


def migrate_once() -> None:
    """Apply the migrations, one process at a time (both workers start together)."""
    import fcntl

    from django.conf import settings
    from django.core.management import call_command

    lock_path = f"{settings.DATABASES['default']['NAME']}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        call_command("migrate", interactive=False, verbosity=0)


def run_worker(system: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    from django.conf import settings

    if system not in WORKER_COMMANDS:
        sys.exit(f"usage: python -m project.demo.systems {{{','.join(WORKER_COMMANDS)}}}")
    if system not in getattr(settings, "TASKPULSE_SYSTEMS", ()):
        print(f"{LABELS[system]} is not enabled on this site (TASKPULSE_SYSTEMS, "
              f"project/demo/systems.py): its worker is not started.", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            while True:
                signal.pause()
        except KeyboardInterrupt:
            return
    migrate_once()
    manage = str(Path(__file__).resolve().parents[2] / "manage.py")
    argv = [sys.executable, manage, *WORKER_COMMANDS[system]]
    os.execv(sys.executable, argv)


if __name__ == "__main__":
    run_worker(sys.argv[1] if len(sys.argv) > 1 else "")
