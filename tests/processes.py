"""Start and stop the real processes integration tests (and benchmarks) run against:
daphne serving the ASGI app, and a Celery worker, isolated by a key prefix and queue.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


LOCALHOST = "127.0.0.1"
WS_PATH = "/ws/progress/"  # consumers/routing.py


def http_url(port: int) -> str:
    """The base address of a web process the tests started on `port`."""
    return f"http://{LOCALHOST}:{port}"


def ws_url(port: int) -> str:
    """Where that process serves the progress WebSocket."""
    return f"ws://{LOCALHOST}:{port}{WS_PATH}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proc:
    """A child process whose output is kept (for readiness checks and failure reports)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    popen: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)
    ready_event: threading.Event = field(default_factory=threading.Event)
    ready_marker: str | None = None
    cwd: Path = ROOT  # a host site's process runs in the site's directory

    def start(self) -> Proc:
        self.lines.clear()
        self.ready_event.clear()
        self.popen = subprocess.Popen(
            self.argv, cwd=self.cwd, env=self.env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        return self

    def _pump(self) -> None:
        assert self.popen is not None and self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip())
            if self.ready_marker and self.ready_marker in line:
                self.ready_event.set()

    def wait_marker(self, timeout: float = START_TIMEOUT) -> None:
        if not self.ready_event.wait(timeout):
            raise TimeoutError(f"{self.name} not ready in {timeout}s:\n{self.output()}")

    def output(self, last: int = 60) -> str:
        return "\n".join(self.lines[-last:])

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        os.killpg(self.popen.pid, sig)
        try:
            self.popen.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(STOP_TIMEOUT)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def delete_prefixed(client: Any, prefix: str) -> None:
    """Delete what a stack with this prefix left in Redis: records, and the Celery
    queues named after it (`prefix`, `prefix-*`) with kombu's bindings."""
    for pattern in (f"{prefix}:*", f"{prefix}-*", prefix, f"_kombu.binding*.{prefix}*"):
        for key in client.scan_iter(match=pattern, count=1000):
            client.delete(key)


def stack_env(prefix: str, queue: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "TASKPULSE_PREFIX": prefix,
        "CELERY_TASK_DEFAULT_QUEUE": queue,
        "PYTHONUNBUFFERED": "1",
        "CELERY_IMPORTS": "tests.tasks",
    })
    env.update(extra or {})
    return env


ASGI_APPLICATION = "project.asgi:application"  # the example site's


def daphne(env: dict[str, str], port: int) -> Proc:
    """The tuned launcher (consumers/serve.py) serving the example site."""
    argv = [sys.executable, "-m", "consumers.serve", ASGI_APPLICATION,
            "--bind", "127.0.0.1", "--port", str(port)]
    return Proc(f"daphne:{port}", argv, env)


def stock_daphne(env: dict[str, str], port: int) -> Proc:
    """Stock daphne serving the example site: none of consumers/serve.py."""
    argv = [str(BIN / "daphne"), "--bind", LOCALHOST, "--port", str(port), ASGI_APPLICATION]
    return Proc(f"stock-daphne:{port}", argv, env)


def uvicorn(env: dict[str, str], port: int, *options: str) -> Proc:
    """uvicorn serving the example site, with `options` after its defaults."""
    argv = [sys.executable, "-m", "uvicorn", ASGI_APPLICATION,
            "--host", LOCALHOST, "--port", str(port), *options]
    return Proc(f"uvicorn:{port}", argv, env)


def worker(env: dict[str, str], name: str, concurrency: int = 2) -> Proc:
    argv = [
        str(BIN / "celery"), "-A", "project", "worker", "-P", "prefork", "-c", str(concurrency),
        "-Q", env["CELERY_TASK_DEFAULT_QUEUE"], "-n", f"{name}@%h", "-l", "info",
        "--without-mingle", "--without-gossip",
    ]
    return Proc(f"worker:{name}", argv, env, ready_marker=" ready.")


def wait_http_ok(url: str, timeout: float = START_TIMEOUT, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.popen is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited:\n{proc.output()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    detail = proc.output() if proc is not None else ""
    raise TimeoutError(f"{url} not answering 200 within {timeout}s\n{detail}")


def start_daphne(env: dict[str, str], port: int) -> Proc:
    proc = daphne(env, port).start()
    wait_http_ok(f"http://127.0.0.1:{port}/healthz", proc=proc)
    return proc


def start_worker(env: dict[str, str], name: str, concurrency: int = 2) -> Proc:
    proc = worker(env, name, concurrency).start()
    proc.wait_marker()
    return proc


@contextmanager
def running(*procs: Proc) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in procs:
            proc.stop()


def redis_server(port: int, data_dir: str, persistent: bool = True) -> Proc:
    """A private redis-server (fault tests restart it; never the shared one)."""
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", data_dir,
            "--save", "", "--appendonly", "yes" if persistent else "no",
            "--appendfsync", "always"]
    return Proc(f"redis:{port}", argv, dict(os.environ),
                ready_marker="Ready to accept connections")


def start_redis(port: int, data_dir: str, persistent: bool = True) -> Proc:
    proc = redis_server(port, data_dir, persistent).start()
    proc.wait_marker()
    return proc


# -- Redis Sentinel: a replica and a sentinel (tests/test_sentinel.py) -----------

SENTINEL_DOWN_AFTER_MS = 1000


def start_replica(port: int, data_dir: str, master_port: int,
                  *extra: str) -> Proc:
    """A private redis-server replicating the one on `master_port`, once in sync."""
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", data_dir,
            "--save", "", "--appendonly", "no", "--replicaof", "127.0.0.1", str(master_port),
            *extra]
    proc = Proc(f"redis-replica:{port}", argv, dict(os.environ),
                ready_marker="MASTER <-> REPLICA sync: Finished with success").start()
    proc.wait_marker()
    return proc


def start_sentinel(port: int, data_dir: str, master_name: str, master_port: int,
                   down_after_ms: int = SENTINEL_DOWN_AFTER_MS, quorum: int = 1) -> Proc:
    """A redis-server in sentinel mode monitoring the master on `master_port`.

    Sentinel rewrites its config file, so it gets its own in `data_dir`.
    """
    conf = Path(data_dir) / f"sentinel-{port}.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {data_dir}\n"
        f"sentinel monitor {master_name} 127.0.0.1 {master_port} {quorum}\n"
        f"sentinel down-after-milliseconds {master_name} {down_after_ms}\n"
        f"sentinel failover-timeout {master_name} 10000\n")
    proc = Proc(f"sentinel:{port}", ["redis-server", str(conf), "--sentinel"], dict(os.environ),
                ready_marker="+monitor master").start()
    proc.wait_marker()
    return proc


# -- RabbitMQ, for the tests that run Celery's broker on it (skipped without it) ---

AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def amqp_reachable(url: str = AMQP_URL) -> bool:
    parsed = urllib.parse.urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 5672), 2):
            return True
    except OSError:
        return False
