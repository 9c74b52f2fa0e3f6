"""Helpers for the fault-injection tests: a private stack (own prefix, queue,
daphne processes and worker, optionally its own redis-server) that a test may
kill and restart without touching the session stack or the shared Redis."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import redis
import websockets

from progress.tokens import issue_token
from tests import processes
from tests.client import connect

WAIT = 30.0


@dataclass
class PrivateStack:
    prefix: str
    env: dict[str, str]
    ports: list[int]
    webs: list[processes.Proc] = field(default_factory=list)
    worker: processes.Proc | None = None

    def ws(self, i: int = 0) -> str:
        return processes.ws_url(self.ports[i])

    def http(self, i: int = 0) -> str:
        return processes.http_url(self.ports[i])

    def start_worker(self, concurrency: int = 2) -> None:
        self.worker = processes.start_worker(self.env, f"{self.prefix}-w", concurrency)

    def restart_web(self, i: int = 0, sig: int = signal.SIGTERM) -> None:
        self.webs[i].stop(sig)
        self.webs[i] = processes.start_daphne(self.env, self.ports[i])

    def pool_children(self) -> list[int]:
        """Pids of the worker's pool processes (children of its main process)."""
        assert self.worker is not None
        path = f"/proc/{self.worker.pid}/task/{self.worker.pid}/children"
        with open(path) as f:
            return [int(p) for p in f.read().split()]

    def stop(self) -> None:
        for proc in [*self.webs, *([self.worker] if self.worker else [])]:
            proc.stop()


# Starts a web process serving the example site: (environment, port) -> the process.
Starter = Callable[[dict[str, str], int], processes.Proc]


@dataclass
class Served:
    """A web process of `kind` that a test started for a private stack's worker."""

    kind: str
    port: int
    proc: processes.Proc
    stack: PrivateStack
    start: Starter

    @property
    def http(self) -> str:
        return processes.http_url(self.port)

    @property
    def ws(self) -> str:
        return processes.ws_url(self.port)

    def restart(self) -> None:
        self.proc.stop()
        self.proc = self.start(self.stack.env, self.port).start()
        processes.wait_http_ok(f"{self.http}/healthz", proc=self.proc)


@contextmanager
def served_by(kind: str, start: Starter, stack: PrivateStack) -> Iterator[Served]:
    """`start`'s web process on a free port for the block; no traceback in its log."""
    port = processes.free_port()
    served = Served(kind, port, start(stack.env, port).start(), stack, start)
    try:
        processes.wait_http_ok(f"{served.http}/healthz", proc=served.proc)
        yield served
    finally:
        served.proc.stop()
    assert not [line for line in served.proc.lines if "Traceback" in line], \
        served.proc.output()


@contextmanager
def private_stack(extra_env: dict[str, str] | None = None, webs: int = 1,
                  redis_url: str | None = None, concurrency: int = 2,
                  worker: bool = True) -> Iterator[PrivateStack]:
    prefix = f"tpfault{secrets.token_hex(3)}"
    env = processes.stack_env(prefix, prefix, {**(extra_env or {}),
                                               **({"REDIS_URL": redis_url} if redis_url else {})})
    stack = PrivateStack(prefix, env, [processes.free_port() for _ in range(webs)])
    client = redis.Redis.from_url(env.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    try:
        if worker:
            stack.start_worker(concurrency)
        for port in stack.ports:
            stack.webs.append(processes.start_daphne(env, port))
        yield stack
    finally:
        stack.stop()
        with suppress(redis.RedisError):
            processes.delete_prefixed(client, prefix)
        client.close()


@contextmanager
def own_redis(tmp_dir: str, persistent: bool = True) -> Iterator[tuple[str, processes.Proc]]:
    """A redis-server on a spare port; yields its URL and process (restartable)."""
    port = processes.free_port()
    proc = processes.start_redis(port, tmp_dir, persistent)
    try:
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        proc.stop()


def restart_redis(proc: processes.Proc, down_for: float = 1.0) -> None:
    proc.stop(signal.SIGTERM)
    time.sleep(down_for)  # the outage itself is the point of the test
    proc.start()
    proc.wait_marker()


class Watcher:
    """A client that watches tasks and checks §4's rules frame by frame."""

    def __init__(self, allow_progress_skips: bool = False) -> None:
        # PROTOCOL.md §4 rule 5: only a slow reader may see progress events skipped.
        self.allow_progress_skips = allow_progress_skips
        self.last: dict[str, tuple[str | None, int]] = {}  # task -> (epoch, seq)
        self.final: dict[str, dict[str, Any]] = {}
        self.violations: list[str] = []
        self.frames = 0

    def resume_args(self, task_id: str) -> dict[str, Any]:
        epoch, seq = self.last.get(task_id, (None, 0))
        return {"since": seq, "epoch": epoch} if epoch else {}

    def check(self, frame: dict[str, Any]) -> None:
        """Apply one server frame; record any broken guarantee."""
        self.frames += 1
        kind, task_id = frame.get("type"), frame.get("task_id")
        if kind == "error":
            self.violations.append(f"error frame {frame}")
            return
        if kind not in ("snapshot", "event", "resumed") or task_id is None:
            return
        if kind == "snapshot":
            self.last[task_id] = (frame["epoch"], frame["seq"])
        elif kind == "resumed":
            if self.last.get(task_id, (None, 0))[1] != frame["seq"]:
                self.violations.append(f"resumed at {frame['seq']}, had {self.last.get(task_id)}")
        else:
            epoch, seq = self.last.get(task_id, (None, 0))
            if task_id in self.final:
                self.violations.append(f"{task_id}: event after final: {frame['seq']}")
            elif epoch is not None and frame["epoch"] != epoch:
                self.violations.append(f"{task_id}: new epoch without reset")
            elif frame["seq"] <= seq:
                self.violations.append(f"{task_id}: duplicate or stale seq {frame['seq']}")
            elif frame["seq"] != seq + 1 and not self.allow_progress_skips:
                self.violations.append(f"{task_id}: gap: seq {frame['seq']} after {seq}")
            self.last[task_id] = (frame["epoch"], frame["seq"])
        if frame.get("final"):
            self.final[task_id] = frame


async def watch_until_final(url: str, tokens: dict[str, str], watcher: Watcher,
                            timeout: float, reconnects: int = 1000) -> int:
    """Watch every task to its final frame, reconnecting (and resuming) if the server goes;
    the number of connections it took."""
    deadline = time.monotonic() + timeout
    connections = 0
    while set(tokens) - set(watcher.final) and reconnects >= 0:
        reconnects -= 1
        try:
            async with connect(url) as conn:
                connections += 1
                for task_id, token in tokens.items():
                    if task_id not in watcher.final:
                        await conn.send(json.dumps({"type": "subscribe", "task_id": task_id,
                                                    "token": token,
                                                    **watcher.resume_args(task_id)}))
                while set(tokens) - set(watcher.final):
                    left = deadline - time.monotonic()
                    raw = await asyncio.wait_for(conn.recv(), max(left, 0.01))
                    watcher.check(json.loads(raw))
        except (OSError, websockets.ConnectionClosed, websockets.InvalidHandshake):
            await asyncio.sleep(0.2)  # the server is restarting: try again shortly
        if time.monotonic() > deadline:
            raise TimeoutError(f"not final in {timeout}s: {set(tokens) - set(watcher.final)}")
    if set(tokens) - set(watcher.final):
        raise ConnectionError(f"connection lost: {set(tokens) - set(watcher.final)} not final")
    return connections


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") == "1"


def send_task(stack: PrivateStack, name: str, task_id: str | None = None,
              **kwargs: Any) -> str:
    """Queue a test task on the private stack's queue (under `task_id`, else a fresh
    id); its id."""
    from celery import Celery

    task_id = task_id or f"{name.rsplit('.', 1)[-1]}-{secrets.token_hex(8)}"
    app = Celery("faultkit", broker=stack.env.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
                 set_as_current=False)  # else later tests' tasks are sent through this app
    try:
        app.send_task(name, kwargs=kwargs, queue=stack.prefix, task_id=task_id)
    finally:
        app.close()
    return task_id


async def resume_to_final(url: str, task_id: str, watcher: Watcher, **client: Any) -> None:
    """Resume `task_id` where `watcher` left it, to SUCCESS, with nothing out of order."""
    async with websockets.connect(url, open_timeout=10, **client) as again:
        await again.send(json.dumps({"type": "subscribe", "task_id": task_id,
                                     "token": issue_token(task_id),
                                     **watcher.resume_args(task_id)}))
        async with asyncio.timeout(60):
            while task_id not in watcher.final:
                watcher.check(json.loads(await again.recv()))
    assert watcher.violations == []
    assert watcher.final[task_id]["state"] == "SUCCESS"
