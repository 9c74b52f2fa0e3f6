"""The architecture holds: import-linter's contracts (pyproject.toml), no import
cycles, and a site without Celery imports no Celery at all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("progress", "consumers")


def test_import_contracts_are_kept() -> None:
    """`lint-imports`: the core imports no task-queue library, progress does not import
    consumers, and the progress layers only import downwards."""
    done = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DJANGO_DEBUG": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BROKEN" not in done.stdout


def strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """Tarjan's algorithm over the module graph: the groups of modules in a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph.find_modules_directly_imported_by(module):
            if target not in graph.modules:
                continue
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group: set[str] = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(group)

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles() -> None:
    """No module reaches itself through imports (function-level imports included)."""
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    # A package importing its own submodules to re-export them is not a cycle of concerns.
    for package in [m for m in graph.modules if graph.find_children(m)]:
        for child in graph.find_children(package):
            if graph.direct_import_exists(importer=package, imported=child):
                graph.remove_import(importer=package, imported=child)
    assert strongly_connected(graph) == []


WITHOUT_CELERY = r"""
import sys

# As if not installed: `import celery` raises ModuleNotFoundError and
# importlib.util.find_spec("celery") answers None.
QUEUE_LIBRARIES = ("celery", "kombu", "billiard")
for name in QUEUE_LIBRARIES:
    sys.modules[name] = None

import django
from django.conf import settings
settings.configure(
    SECRET_KEY="k" * 50, ALLOWED_HOSTS=["localhost"], ROOT_URLCONF="progress.urls",
    INSTALLED_APPS=["django.contrib.staticfiles", "channels", "progress"],
    STATIC_URL="/static/", TASKPULSE_KEY_PREFIX=sys.argv[1])
django.setup()

from consumers.routing import websocket_application
from progress import taskqueue
from progress.publisher import publish, store, track
from progress.store.records import EventDraft
from progress.wire.states import State
from progress.tokens import issue_token, verify_token

websocket_application()
task_id = "no-celery-task"
verify_token(issue_token(task_id), task_id)
publish(EventDraft(task_id, State.STARTED, name="plain"))
track(task_id, min_interval=0).update(1, total=2)
publish(EventDraft(task_id, State.SUCCESS, result_json="1"))
assert store().read(task_id).snapshot is not None
store().delete(task_id)
assert taskqueue.enabled() == ()
loaded = sorted(m for m, module in sys.modules.items()
                if module is not None and m.split(".")[0] in QUEUE_LIBRARIES)
assert not loaded, loaded
print("no celery")
"""


def test_a_site_without_celery_imports_none(redis_client: object) -> None:
    """With Celery not installed, the app sets up, publishes, reads and serves WebSockets,
    and nothing imports Celery (no integration is enabled by default)."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run([sys.executable, "-c", WITHOUT_CELERY, "tpnocelery"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no celery"
