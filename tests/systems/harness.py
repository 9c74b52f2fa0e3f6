"""A running site for the Django-Q2 and tasks-framework tests: daphne and one real
worker (qcluster or db_worker) on a SQLite database of their own, with every task
system enabled as the example site enables them (tests/systems/settings.py).

Each stack has its own Redis key prefix (and so its own Django-Q2 queue), deleted
when it stops; every wait has a timeout.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from tests import processes
from tests.client import Http, Ws, connect

SETTINGS = "tests.systems.settings"
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
STALL_TIMEOUT = 3.0  # TASKPULSE_STALL_TIMEOUT of the stack: LOST comes quickly
CANCEL_GRACE = 1.0  # TASKPULSE_CANCEL_GRACE: a cancelled task that ignores it is terminated
WATCH_TIMEOUT = 30.0
COMMAND_TIMEOUT = 60.0

Frames = list[dict[str, Any]]


def system_env(prefix: str, database: Path, **extra: str) -> dict[str, str]:
    env = processes.stack_env(prefix, prefix, {
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "DJANGO_DEBUG": "1",
        "TASKPULSE_DEMO_DB": str(database),
        "TASKPULSE_SYSTEMS": "celery,django_q,django_tasks",
        "TASKPULSE_Q_WORKERS": "1",
        "TASKPULSE_STALL_TIMEOUT": repr(STALL_TIMEOUT),
        "TASKPULSE_CANCEL_GRACE": repr(CANCEL_GRACE),
        "TASKPULSE_START_RATE": "0",
        "TASKPULSE_CANCEL_RATE": "0",
        "REDIS_URL": REDIS_URL,
    })
    env.update(extra)
    return env


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=processes.ROOT, env=env,
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    assert done.returncode == 0, f"manage.py {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def run_python(env: dict[str, str], code: str) -> Any:
    """Run `code` in a process set up with the stack's settings; the JSON it prints."""
    script = "import django\ndjango.setup()\n" + code
    done = subprocess.run([sys.executable, "-c", script], cwd=processes.ROOT, env=env,
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def stop_cluster(proc: processes.Proc) -> None:
    """Stop a Django-Q2 cluster the way its command expects: SIGTERM to the main
    process, which stops its sentinel, workers and monitor in turn (SIGTERM to the
    whole group kills the sentinel under it, and the main process waits for it for
    ever); whatever is left after the timeout is killed."""
    if proc.popen is None or proc.popen.poll() is not None:
        return
    os.kill(proc.popen.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        proc.popen.wait(processes.STOP_TIMEOUT)
    with suppress(ProcessLookupError):
        os.killpg(proc.popen.pid, signal.SIGKILL)
    proc.popen.wait(processes.STOP_TIMEOUT)


class ClusterProc(processes.Proc):
    """`manage.py qcluster`, stopped as stop_cluster says."""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if sig == signal.SIGTERM:
            stop_cluster(self)
        else:
            super().stop(sig)


def qcluster(env: dict[str, str]) -> processes.Proc:
    return ClusterProc("qcluster", [sys.executable, "manage.py", "qcluster"], env,
                       ready_marker="running.")


def db_worker(env: dict[str, str]) -> processes.Proc:
    argv = [sys.executable, "manage.py", "db_worker", "--no-reload", "--no-startup-delay",
            "--interval", "0.1"]
    return processes.Proc("db_worker", argv, env, ready_marker="Starting worker")


@dataclass
class SystemStack:
    prefix: str
    env: dict[str, str]
    port: int
    web: processes.Proc
    worker: processes.Proc
    make_worker: Callable[[dict[str, str]], processes.Proc]
    client: redis.Redis

    @property
    def base(self) -> str:
        return processes.http_url(self.port)

    @property
    def ws(self) -> str:
        return processes.ws_url(self.port)

    def start(self, task: str, **kwargs: Any) -> tuple[str, str]:
        """Start `task` over the HTTP API: (task id, token)."""
        status, body = Http(self.base).start(task=task, **kwargs)
        assert status == 202, (status, body, self.web.output())
        return str(body["task_id"]), str(body["token"])

    def cancel(self, task_id: str, token: str) -> tuple[int, Any]:
        return Http(self.base).request("POST", f"/api/tasks/{task_id}/cancel/",
                                       headers={"Authorization": f"Bearer {token}"})

    def status(self, task_id: str, token: str) -> tuple[int, Any]:
        return Http(self.base).request("GET", f"/api/tasks/{task_id}/",
                                       headers={"Authorization": f"Bearer {token}"})

    def history(self, task_id: str) -> Frames:
        raw = self.client.lrange(f"{self.prefix}:hist:{{{task_id}}}", 0, -1)
        return [json.loads(item) for item in raw]

    def states(self, task_id: str) -> list[str]:
        return [event["state"] for event in self.history(task_id)]

    def wait_final(self, task_id: str, timeout: float = WATCH_TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.history(task_id)
            if history and history[-1]["final"]:
                return history[-1]
            time.sleep(0.05)
        raise TimeoutError(f"{task_id} not final in {timeout}s: {self.states(task_id)}\n"
                           f"{self.worker.output()}")

    def restart_worker(self) -> None:
        self.worker.stop()
        self.worker = self.make_worker(self.env).start()
        self.worker.wait_marker()

    def watch(self, task_id: str, token: str, timeout: float = WATCH_TIMEOUT) -> Frames:
        return asyncio.run(watch(self.ws, task_id, token, timeout))


async def watch(url: str, task_id: str, token: str, timeout: float = WATCH_TIMEOUT) -> Frames:
    """Subscribe and collect every frame up to the final one."""
    async with connect(url) as conn:
        ws = Ws(conn)
        await ws.subscribe(task_id, token)
        return await ws.frames_until_final(task_id, timeout)


def delete_stack_keys(client: redis.Redis, prefix: str) -> None:
    processes.delete_prefixed(client, prefix)
    for key in client.scan_iter(match=f"django_q:{prefix}-q:*", count=1000):
        client.delete(key)


@contextmanager
def running_stack(make_worker: Callable[[dict[str, str]], processes.Proc],
                  directory: Path, **extra_env: str) -> Iterator[SystemStack]:
    """Migrate a fresh database, start the worker and daphne; stop both and delete
    the stack's Redis keys afterwards."""
    prefix = f"tpsys{secrets.token_hex(3)}"
    env = system_env(prefix, directory / "tasks.sqlite3", **extra_env)
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    manage(env, "migrate", "--noinput")
    worker = make_worker(env).start()
    web: processes.Proc | None = None
    try:
        port = processes.free_port()
        web = processes.start_daphne(env, port)
        worker.wait_marker()
        stack = SystemStack(prefix, env, port, web, worker, make_worker, client)
        yield stack
        worker = stack.worker
    finally:
        if web is not None:
            web.stop()
        worker.stop()
        delete_stack_keys(client, prefix)
        client.close()


def assert_contiguous(frames: Frames) -> None:
    """A snapshot, then events whose seqs follow it one by one (PROTOCOL.md §4)."""
    assert frames[0]["type"] == "snapshot", frames[0]
    seqs = [frame["seq"] for frame in frames if frame["type"] in ("snapshot", "event")]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs


def assert_history(history: Frames) -> None:
    """The record's whole life: seqs 1..n, PENDING first, progress in order."""
    assert [event["seq"] for event in history] == list(range(1, len(history) + 1)), history
    assert history[0]["state"] == "PENDING"
    currents = [event["progress"]["current"] for event in history
                if event["state"] == "PROGRESS"]
    assert currents == sorted(currents), currents
