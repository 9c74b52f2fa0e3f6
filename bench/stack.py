"""The real stack a benchmark runs against: its own redis-server, a web server
(daphne via consumers.serve, or uvicorn on the same ASGI app) and Celery workers.

Process start/stop is tests/processes.py's; this module only adds what the
benchmarks need on top (a private Redis, uvicorn, CPU and memory readings).
"""

from __future__ import annotations

import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import redis

from tests import processes

SERVERS = ("daphne", "uvicorn")
FD_TARGET = 20_000


def raise_fd_limit(target: int = FD_TARGET) -> int:
    """Raise this process's open-file limit (children inherit it); the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(target, hard) if hard != resource.RLIM_INFINITY else target
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class RedisServer:
    """A private, non-persistent redis-server, so heavy loads never touch the shared one."""

    port: int
    popen: subprocess.Popen[bytes]
    workdir: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=10)

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.popen.pid).cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_redis() -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("benchmarks need redis-server on PATH (apt-get install redis-server)")
    port = processes.free_port()
    workdir = tempfile.mkdtemp(prefix="tpbench-redis-")
    popen = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", workdir, "--maxclients", "20000", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    server = RedisServer(port, popen, workdir)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            server.client().ping()
            return server
        except redis.ConnectionError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"redis-server did not start on port {port}")


def bench_env(redis_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A stack environment with its own prefix and queue, pointed at `redis_url`."""
    name = f"tpbench{secrets.token_hex(3)}"
    env = processes.stack_env(name, name, {
        "REDIS_URL": redis_url,
        "CELERY_IMPORTS": "bench.tasks",
        # The publisher throttle (issue 4) would coalesce the paced events we time.
        "TASKPULSE_MIN_INTERVAL": "0",
        "LOG_LEVEL": "WARNING",
        # Production mode, as deployed (DEBUG keeps more per request).
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        # Every load generator connects from 127.0.0.1: no per-address caps.
        "TASKPULSE_MAX_SOCKETS_PER_CLIENT": "0",
        "TASKPULSE_START_RATE": "0",
        "TASKPULSE_CANCEL_RATE": "0",
    })
    env.update(extra or {})
    return env


def uvicorn(env: dict[str, str], port: int) -> processes.Proc:
    argv = [sys.executable, "-m", "uvicorn", "project.asgi:application", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning", "--no-access-log",
            "--ws-max-size", str(64 * 1024), "--backlog", "8192"]
    return processes.Proc(f"uvicorn:{port}", argv, env)


def stock_daphne(env: dict[str, str], port: int) -> processes.Proc:
    """`daphne project.asgi:application`: daphne as installed, none of consumers/serve.py."""
    argv = [str(processes.BIN / "daphne"), "--bind", "127.0.0.1", "--port", str(port),
            processes.ASGI_APPLICATION]
    return processes.Proc(f"daphne-stock:{port}", argv, env)


# Server kinds bench/bench_servers.py also compares (not in every benchmark's default set):
# stock daphne, and the launcher with every guard forced off (progress/compat.py).
STOCK_SERVERS = ("daphne-stock", "daphne-untested")


def web(kind: str, env: dict[str, str], port: int) -> processes.Proc:
    if kind == "daphne":
        return processes.daphne(env, port)
    if kind == "uvicorn":
        return uvicorn(env, port)
    if kind == "daphne-stock":
        return stock_daphne(env, port)
    if kind == "daphne-untested":
        return processes.daphne({**env, "TASKPULSE_UNTESTED": "*"}, port)
    raise ValueError(f"unknown server {kind!r}; use one of: "
                     f"{', '.join((*SERVERS, *STOCK_SERVERS))}")


def start_web(kind: str, env: dict[str, str],
              port: int | None = None) -> tuple[processes.Proc, int]:
    port = port or processes.free_port()
    proc = web(kind, env, port).start()
    try:
        processes.wait_http_ok(f"http://127.0.0.1:{port}/healthz", proc=proc)
    except BaseException:
        proc.stop()
        raise
    return proc, port


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of a process and its children (celery prefork)."""
    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def busy_cores(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Cores the whole machine kept busy between two machine_jiffies() readings."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return (os.cpu_count() or 1) * busy / total if total else float("nan")


def rss_bytes(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


@contextmanager
def private_redis() -> Iterator[RedisServer]:
    server = start_redis()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def stopping(*procs: processes.Proc) -> Iterator[None]:
    with processes.running(*procs):
        yield


def setup_django(env: dict[str, str]) -> None:
    """Configure this (driver) process like the stack, so it can issue tokens and publish."""
    os.environ.update(env)
    import django

    django.setup()


def daphne_from(tree: str, env: dict[str, str], port: int) -> processes.Proc:
    """The tuned launcher importing the project from `tree` instead of this checkout:
    `consumers.serve <app>` since the launcher moved there, `project.serve` before."""
    launcher, app = ("consumers.serve", ["project.asgi:application"])
    if (Path(tree) / "project" / "serve.py").exists():
        launcher, app = "project.serve", []
    # The tree first, and this checkout (the working directory, which some
    # import along the way puts back at the front) not at all.
    boot = ("import os, sys, runpy; tree = sys.argv.pop(1); "
            "sys.path[:] = [tree] + [p for p in sys.path if p not in ('', os.getcwd())]; "
            "os.chdir(tree); "
            f"runpy.run_module('{launcher}', run_name='__main__', alter_sys=True)")
    argv = [sys.executable, "-c", boot, tree, *app, "--bind", "127.0.0.1", "--port", str(port)]
    return processes.Proc(f"daphne-baseline:{port}", argv, env)
