"""`python manage.py watch` as a user runs it: under a terminal (a pty) it draws a
moving bar, as a pipe it prints §3 objects as JSON lines, and its exit status says
how the tasks ended (0 SUCCESS, 1 FAILURE, 2 REVOKED/LOST, 3 unknown)."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from progress.tokens import WATCH_AND_CANCEL, issue_token
from tests import processes
from tests.faultkit import PrivateStack, private_stack, send_task

pytestmark = pytest.mark.integration

MANAGE = [sys.executable, str(processes.ROOT / "manage.py"), "watch"]


@pytest.fixture(scope="module")
def worker_stack(redis_client: Any) -> Iterator[PrivateStack]:
    with private_stack({"TASKPULSE_MIN_INTERVAL": "0"}, webs=1) as running:
        yield running


def watch_json(stack: PrivateStack, *task_ids: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MANAGE, *task_ids, "--json", "--timeout", "60"], env=stack.env,
                          capture_output=True, text=True, timeout=90)


def test_json_lines_are_contiguous_and_success_exits_0(worker_stack: PrivateStack) -> None:
    task_id = send_task(worker_stack, "tests.slow_steps", steps=6, delay=0.05)
    done = watch_json(worker_stack, task_id)
    assert done.returncode == 0, done.stderr
    objects = [json.loads(line) for line in done.stdout.splitlines()]
    seqs = [o["seq"] for o in objects]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert objects[-1]["state"] == "SUCCESS" and objects[-1]["result"] == {"steps": 6}


def test_failure_exits_1(worker_stack: PrivateStack) -> None:
    task_id = send_task(worker_stack, "tests.fails_after", steps=2)
    done = watch_json(worker_stack, task_id)
    assert done.returncode == 1
    assert json.loads(done.stdout.splitlines()[-1])["state"] == "FAILURE"


def test_revoked_exits_2(worker_stack: PrivateStack) -> None:
    from tests.client import Http

    task_id = send_task(worker_stack, "tests.slow_steps", steps=200, delay=0.05)
    watching = subprocess.Popen([*MANAGE, task_id, "--json", "--timeout", "60"],
                                env=worker_stack.env, stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)
    token = issue_token(task_id, WATCH_AND_CANCEL)
    status, _ = Http(worker_stack.http()).request(
        "POST", f"/api/tasks/{task_id}/cancel/", headers={"Authorization": f"Bearer {token}"})
    assert status in (200, 202), status
    out, _ = watching.communicate(timeout=60)
    assert watching.returncode == 2
    assert json.loads(out.splitlines()[-1])["state"] == "REVOKED"


def test_unknown_task_exits_3(worker_stack: PrivateStack) -> None:
    done = watch_json(worker_stack, "no-such-task-123")
    assert done.returncode == 3 and "unknown task id: no-such-task-123" in done.stderr


def test_worst_outcome_wins(worker_stack: PrivateStack) -> None:
    ok = send_task(worker_stack, "tests.slow_steps", steps=2, delay=0)
    failed = send_task(worker_stack, "tests.fails_after", steps=1)
    assert watch_json(worker_stack, ok, failed).returncode == 1


def test_a_terminal_gets_a_moving_bar(worker_stack: PrivateStack) -> None:
    """Under a pty: the bar is drawn and redrawn (several percentages), then the result."""
    task_id = send_task(worker_stack, "tests.slow_steps", steps=20, delay=0.1)
    controller, terminal = pty.openpty()
    env = {**worker_stack.env, "COLUMNS": "120", "TERM": "xterm-256color"}
    proc = subprocess.Popen([*MANAGE, task_id], env=env, stdin=terminal, stdout=terminal,
                            stderr=terminal, close_fds=True)
    os.close(terminal)
    screen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the command exited and the pty closed
                break
            if not chunk:
                break
            screen += chunk
        elif proc.poll() is not None:
            break
    os.close(controller)
    assert proc.wait(10) == 0
    text = screen.decode(errors="replace")
    percents = set(re.findall(r"(\d{1,3})%", text))
    assert len(percents) >= 3, text[-2000:]  # the bar moved
    assert "100" in percents and f"{task_id}: SUCCESS" in text
