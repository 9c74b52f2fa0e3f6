"""A brand-new Django 6 site with TaskPulse on Django's own `django.tasks` (no
backport), `django-tasks-db`'s database backend and its `manage.py db_worker`, watched
over stock daphne (tests/systems/django6.py). Skipped without a Python >= 3.12."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

import pytest
import redis

from tests import fresh_site, processes
from tests.systems import django6, harness
from tests.systems.harness import Frames

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]  # two pip resolves


def progress_currents(frames: Frames) -> list[int]:
    return [frame["progress"]["current"] for frame in frames if frame["state"] == "PROGRESS"]


def assert_lived(frames: Frames, final_state: str) -> dict[str, Any]:
    """What a watcher of a task queued before the worker started sees: a PENDING
    snapshot, STARTED, progress climbing to the last step, then `final_state`, in
    contiguous seqs; the final frame."""
    harness.assert_contiguous(frames)
    states = [frame["state"] for frame in frames]
    progress = len(states) - 3
    assert states == ["PENDING", "STARTED", *["PROGRESS"] * progress, final_state], states
    currents = progress_currents(frames)
    assert len(currents) >= 2 and currents == sorted(set(currents)), currents
    assert currents[-1] == django6.STEPS, currents
    assert frames[-1]["final"] and frames[-1]["progress"]["current"] == django6.STEPS
    return frames[-1]


def test_a_django6_site_on_django_tasks(redis_client: redis.Redis, tmp_path: Path) -> None:
    """The wheel with Django 6 and django-tasks-db in a fresh Python >= 3.12 virtualenv
    (no backport there): `@task` functions enqueued with `.enqueue()` run on
    `db_worker` and are watched over stock daphne to SUCCESS, FAILURE with the
    exception's type and message, and SUCCESS reported through `track(context)`."""
    python, tried = django6.find_python()
    if python is None:
        pytest.skip(f"Django 6 needs Python >= {'.'.join(map(str, django6.MIN_PYTHON))} "
                    "that can make a virtualenv, and none was found (tried: "
                    f"{', '.join(tried) or 'nothing on PATH or in the usual places'}); "
                    f"set {django6.PYTHON_VARIABLE} to one")
    wheel = fresh_site.build_wheel(tmp_path / "source", tmp_path / "wheelhouse")
    venv = django6.make_venv(tmp_path, wheel, python)
    site_python = str(venv / "bin" / "python")
    prefix = f"tpdj6{secrets.token_hex(3)}"
    site = django6.make_site(tmp_path, prefix, harness.REDIS_URL)
    env = fresh_site.clean_env(venv / "bin",
                               DJANGO_SETTINGS_MODULE=f"{django6.SITE_PACKAGE}.settings")
    listed = fresh_site.run([site_python, "-m", "pip", "list", "--format=json"], site, env)
    installed = {package["name"].lower(): package["version"] for package in json.loads(listed)}
    assert installed["django"].split(".")[0] == "6" and "django-tasks-db" in installed
    assert "django-tasks" not in installed and "celery" not in installed, installed
    fresh_site.run([site_python, "manage.py", "migrate", "--noinput"], site, env)
    port = processes.free_port()
    web = processes.Proc("daphne", [str(venv / "bin" / "daphne"), "-b", "127.0.0.1",
                                    "-p", str(port), f"{django6.SITE_PACKAGE}.asgi:application"],
                         env, cwd=site)
    worker = processes.Proc("db_worker", django6.db_worker_argv(site_python), env,
                            ready_marker="Starting worker", cwd=site)
    try:
        web.start()
        processes.wait_http_ok(f"http://127.0.0.1:{port}/healthz", proc=web)
        printed = fresh_site.run([site_python, "-c", django6.ENQUEUE, str(django6.STEPS)],
                                 site, env)
        started = json.loads(printed.strip().splitlines()[-1])
        assert started["django"].startswith("6."), started
        assert not started["backport_importable"], started
        assert started["frameworks"] == ["django.tasks"], started
        assert started["task_class"].startswith("django.tasks."), started
        assert started["queues"] == ["django_tasks"], started
        assert started["progress"].startswith(str(venv)), started  # the wheel's, not ours
        tasks = started["tasks"]
        tokens = {task["id"]: task["token"] for task in tasks.values()}
        # The worker starts once every task is watched: each one's whole life is seen live.
        try:
            frames = asyncio.run(django6.watch_all(processes.ws_url(port),
                                                   tokens, worker.start))
        except TimeoutError as exc:
            raise AssertionError(f"not final in time\n{worker.output()}\n{web.output()}") from exc

        success = assert_lived(frames[tasks["success"]["id"]], "SUCCESS")
        assert success["result"] == {"counted": django6.STEPS}, worker.output()
        assert success["name"] == tasks["success"]["name"] == "jobs.tasks.count"

        failure = assert_lived(frames[tasks["failure"]["id"]], "FAILURE")
        assert failure["error"] == {
            "type": "CountFailed",
            "message": django6.FAILURE_MESSAGE.format(n=django6.STEPS)}, failure
        assert failure["name"] == tasks["failure"]["name"]

        context_id = tasks["context"]["id"]
        in_context = assert_lived(frames[context_id], "SUCCESS")
        # track(context) reported for the task watched, on its first attempt.
        assert in_context["result"] == {"counted": django6.STEPS, "reporter": context_id,
                                        "attempt": 1}, in_context
    finally:
        web.stop()
        worker.stop()
        processes.delete_prefixed(redis_client, prefix)
