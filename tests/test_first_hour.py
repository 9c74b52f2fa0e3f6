"""The first hour (issue 17): what a new user's server logs say when something is
set up wrong. A task queued with no worker with TaskPulse is warned of; a refused
origin or token is logged once a minute per client, never the token; a cancel is one
INFO line in the worker's log, not an ERROR with a traceback; another distribution
installing `progress` stops start-up with a message naming both.

Real processes throughout: daphne and Celery workers (tests/processes.py), a fresh
virtualenv for the name clash (tests/fresh_site.py).
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import websockets

from progress.control.refusals import Refusal, RefusalLog
from progress.tokens import issue_token
from tests import fresh_site, processes
from tests.client import Http, Ws, connect
from tests.conftest import REDIS_URL, Stack

pytestmark = pytest.mark.integration

NO_WORKER = "no worker with TaskPulse has announced itself"
REFUSED = "TaskPulse refused"
LOG_WAIT = 10.0  # seconds for a line to reach a process's output
QUIET_WAIT = 1.0  # seconds a line that must not come is waited for


def lines_with(proc: processes.Proc, *parts: str, since: int = 0) -> list[str]:
    return [line for line in proc.lines[since:] if all(part in line for part in parts)]


def wait_line(proc: processes.Proc, *parts: str, since: int = 0) -> list[str]:
    """The output lines holding every one of `parts`, once there is one."""
    deadline = time.monotonic() + LOG_WAIT
    while not (found := lines_with(proc, *parts, since=since)):
        assert time.monotonic() < deadline, f"no line with {parts}:\n{proc.output()}"
        time.sleep(0.05)
    return found


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix (and Celery queue) of this test's own, deleted afterwards."""
    own = f"tpfirst{secrets.token_hex(3)}"
    yield own
    processes.delete_prefixed(redis_client, own)


def warnings_only(prefix: str, queue: str | None = None, **extra: str) -> dict[str, str]:
    """A stack's environment whose processes log WARNING and above only: a line seen
    is a WARNING (or worse)."""
    return processes.stack_env(prefix, queue or prefix, {"LOG_LEVEL": "WARNING", **extra})


# -- a task queued with no worker that reports to this Redis and prefix ------------

def test_a_task_queued_with_no_worker_is_warned_of_once(prefix: str) -> None:
    """No worker: starting tasks over the HTTP API logs one WARNING naming the causes
    (the progress app, the Redis database, the key prefix), not one per task."""
    port = processes.free_port()
    web = processes.start_daphne(warnings_only(prefix), port)
    with processes.running(web):
        http = Http(processes.http_url(port))
        for _ in range(3):
            status, started = http.start(steps=1)
            assert status == 202, started
        warned = wait_line(web, NO_WORKER)
        time.sleep(QUIET_WAIT)
        assert len(lines_with(web, NO_WORKER)) == 1, web.output()
    line = warned[0]
    assert "'progress' in INSTALLED_APPS" in line and "TASKPULSE_KEY_PREFIX" in line
    assert f"key prefix '{prefix}'" in line and "database 0" in line


def test_a_worker_under_another_key_prefix_is_warned_of(prefix: str) -> None:
    """A worker on the same queue but another TASKPULSE_KEY_PREFIX runs the task to
    its end, and the web process still warns: no worker reports where it looks."""
    port = processes.free_port()
    other = f"{prefix}x"
    worker = processes.start_worker(processes.stack_env(other, prefix), f"{other}-w")
    with processes.running(worker):
        web = processes.start_daphne(warnings_only(prefix), port)
        with processes.running(web):
            status, started = Http(processes.http_url(port)).start(steps=1, delay=0.05)
            assert status == 202, started
            wait_line(worker, started["task_id"], "succeeded")
            wait_line(web, NO_WORKER, started["task_id"])


def test_no_warning_while_a_worker_with_taskpulse_runs(prefix: str) -> None:
    """A worker with the app, on the same Redis and prefix: a task runs, no warning."""
    port = processes.free_port()
    env = warnings_only(prefix)
    worker = processes.start_worker(processes.stack_env(prefix, prefix), f"{prefix}-w")
    with processes.running(worker):
        web = processes.start_daphne(env, port)
        with processes.running(web):
            status, started = Http(processes.http_url(port)).start(steps=1, delay=0.05)
            assert status == 202, started
            wait_line(worker, started["task_id"], "succeeded")
            assert not lines_with(web, NO_WORKER), web.output()


# -- refusals: one WARNING per client and kind a minute, never the token -----------

@pytest.fixture(scope="module")
def refusing_web(redis_client: redis.Redis) -> Iterator[tuple[processes.Proc, int]]:
    """daphne logging WARNING and above, trusting 127.0.0.1's X-Forwarded-For so each
    test is a client of its own."""
    own = f"tpfirst{secrets.token_hex(3)}"
    port = processes.free_port()
    web = processes.start_daphne(warnings_only(own, TASKPULSE_TRUSTED_PROXIES="127.0.0.1"),
                                 port)
    with processes.running(web):
        yield web, port
    processes.delete_prefixed(redis_client, own)


def new_client() -> str:
    return f"198.51.100.{secrets.randbelow(250) + 1}"


def forged_token() -> str:
    """What a token looks like (signed task id and codes), signed with another key."""
    return f"WyJ0LXt{secrets.token_urlsafe(12)}:{secrets.token_urlsafe(27)}"


async def refused_handshake(port: int, client: str, origin: str) -> None:
    headers = {"Origin": origin, "X-Forwarded-For": client}
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(processes.ws_url(port), origin=None,
                                      additional_headers=headers, open_timeout=10):
            pass
    assert refused.value.response.status_code == 403


def test_a_refused_origin_is_logged_once_a_minute(
        refusing_web: tuple[processes.Proc, int]) -> None:
    """A browser on another site: one WARNING naming its origin and the allowed list;
    its second attempt within the minute adds none."""
    web, port = refusing_web
    client, mark = new_client(), len(web.lines)
    asyncio.run(refused_handshake(port, client, "https://evil.example"))
    line = wait_line(web, REFUSED, client, since=mark)[0]
    assert "'https://evil.example'" in line and "'127.0.0.1'" in line, line
    asyncio.run(refused_handshake(port, client, "https://evil.example"))
    time.sleep(QUIET_WAIT)
    assert len(lines_with(web, REFUSED, client, since=mark)) == 1, web.output()


async def refused_subscribe(port: int, client: str, task_id: str, token: str) -> None:
    async with websockets.connect(processes.ws_url(port), origin=None, open_timeout=10,
                                  additional_headers={"X-Forwarded-For": client}) as conn:
        ws = Ws(conn)
        await ws.subscribe(task_id, token)
        frame = await ws.recv()
    assert frame["type"] == "error" and frame["code"] == "forbidden", frame


def test_a_refused_token_is_logged_once_a_minute_without_the_token(
        refusing_web: tuple[processes.Proc, int]) -> None:
    """A forged token on the socket: one WARNING saying why (token invalid); again
    within the minute, none; the token's text is nowhere in the log."""
    web, port = refusing_web
    client, mark, token = new_client(), len(web.lines), forged_token()
    task_id = str(uuid.uuid4())
    asyncio.run(refused_subscribe(port, client, task_id, token))
    line = wait_line(web, REFUSED, client, since=mark)[0]
    assert "token invalid" in line and task_id in line, line
    asyncio.run(refused_subscribe(port, client, task_id, token))
    time.sleep(QUIET_WAIT)
    assert len(lines_with(web, REFUSED, client, since=mark)) == 1, web.output()
    assert not lines_with(web, token), web.output()


def test_the_http_api_logs_a_token_for_another_task(
        refusing_web: tuple[processes.Proc, int]) -> None:
    """The status and cancel views log their refusal the same way: the reason (the
    token is for another task), once a minute, without the token."""
    web, port = refusing_web
    client, mark = new_client(), len(web.lines)
    token = issue_token(str(uuid.uuid4()))
    http, task_id = Http(processes.http_url(port)), str(uuid.uuid4())
    headers = {"X-Forwarded-For": client, "Authorization": f"Bearer {token}"}
    status, _ = http.request("GET", f"/api/tasks/{task_id}/", headers=headers)
    assert status == 403
    line = wait_line(web, REFUSED, client, since=mark)[0]
    assert "token is for another task" in line and task_id in line, line
    status, _ = http.request("POST", f"/api/tasks/{task_id}/cancel/", headers=headers)
    assert status == 403
    time.sleep(QUIET_WAIT)
    assert len(lines_with(web, REFUSED, client, since=mark)) == 1, web.output()
    assert not lines_with(web, token), web.output()


def test_the_refusal_log_forgets_the_least_recent_client_beyond_its_bound() -> None:
    """At most N clients are remembered: the oldest is forgotten (and may log again),
    a recent one is still quiet; a client's minute passes and it logs again."""
    now = [0.0]
    log = RefusalLog(interval=60.0, max_clients=2, clock=lambda: now[0])
    assert log.due(Refusal.TOKEN, "a") and log.due(Refusal.TOKEN, "b")
    assert log.due(Refusal.ORIGIN, "a")  # another kind of refusal of the same client
    assert not log.due(Refusal.ORIGIN, "a")
    assert log.due(Refusal.TOKEN, "a")  # forgotten: the bound is two pairs
    now[0] = 61.0
    assert log.due(Refusal.ORIGIN, "a")


# -- a cancel in the Celery worker's log ---------------------------------------------

async def cancel_running(stack: Stack, task_id: str, token: str) -> list[dict[str, Any]]:
    async with connect(stack.ws) as conn:
        return await Ws(conn).cancel_when_running(task_id, token)


def test_a_cancel_is_one_info_line_in_the_worker_log(stack: Stack) -> None:
    """A user cancels a running task: the worker logs one INFO line for it, no ERROR
    and no traceback; the task still ends REVOKED."""
    mark = len(stack.worker.lines)
    status, started = Http(stack.http).start(steps=50, delay=0.1)
    assert status == 202, started
    task_id = started["task_id"]
    frames = asyncio.run(cancel_running(stack, task_id, started["token"]))
    final = frames[-1]
    assert final["state"] == "REVOKED" and final["error"]["type"] == "TaskCancelled", final
    wait_line(stack.worker, task_id, "TaskCancelled", since=mark)
    time.sleep(QUIET_WAIT)
    about = lines_with(stack.worker, task_id, "TaskCancelled", since=mark)
    assert len(about) == 1 and "INFO/" in about[0], stack.worker.output()
    later = stack.worker.lines[mark:]
    assert not [line for line in later if "ERROR/" in line or "Traceback" in line], (
        stack.worker.output())


# -- another distribution installing `progress` ---------------------------------------

CLASHING = "progress"  # the progress-bar library on the package index


@pytest.mark.timeout(600)
def test_another_progress_distribution_stops_start_up(tmp_path: Path) -> None:
    """The wheel and the index's `progress` in one virtualenv: `manage.py check`
    fails with a message naming both distributions (pip check sees nothing)."""
    wheel = fresh_site.build_wheel(tmp_path / "source", tmp_path / "wheelhouse")
    venv = fresh_site.make_venv(tmp_path / "venv", [str(wheel), CLASHING])
    python = str(venv / "bin" / "python")
    site = fresh_site.write_site(tmp_path / "site", "clashsite", REDIS_URL,
                                 f"tpclash{secrets.token_hex(3)}", "", "")
    env = fresh_site.clean_env(venv / "bin", DJANGO_SETTINGS_MODULE="clashsite.settings")
    fresh_site.run([python, "-m", "pip", "check"], site, env)  # pip sees no problem
    done = subprocess.run([python, "manage.py", "check"], cwd=site, env=env,
                          capture_output=True, text=True, timeout=fresh_site.COMMAND_TIMEOUT)
    assert done.returncode != 0, done.stdout
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("django.core.exceptions.ImproperlyConfigured"), done.stderr
    assert "'progress' is installed by both taskpulse and progress " in last, last
    assert f"pip uninstall {CLASHING}" in last, last
