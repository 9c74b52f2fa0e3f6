"""Command one (scripts/dev) serves the demo at the address it prints."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import time
import urllib.request

import pytest
import redis

from tests import processes

START_TIMEOUT = 120.0  # scripts/dev runs scripts/setup (pip) before it starts anything
ADDRESS = re.compile(r"TaskPulse demo: (http://\S+/)")


@pytest.mark.integration
def test_command_one_serves_the_demo_where_it_says(redis_client: redis.Redis) -> None:
    """The printed address answers with the demo page (honcho hands web the printed PORT)."""
    port = processes.free_port()
    prefix = f"tpdev{secrets.token_hex(3)}"
    env = {**os.environ, "PORT": str(port), "TASKPULSE_PREFIX": prefix,
           "CELERY_TASK_DEFAULT_QUEUE": prefix, "WORKER_CONCURRENCY": "1"}
    dev = subprocess.Popen([str(processes.ROOT / "scripts" / "dev")], cwd=processes.ROOT,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    try:
        assert dev.stdout is not None
        address = None
        deadline = time.monotonic() + START_TIMEOUT
        for line in dev.stdout:
            found = ADDRESS.search(line)
            if found:
                address = found.group(1)
                break
            assert time.monotonic() < deadline, "scripts/dev printed no address"
        assert address == f"http://127.0.0.1:{port}/"
        page = _get_when_up(address, deadline)
        assert "<title>TaskPulse demo</title>" in page
    finally:
        os.killpg(dev.pid, signal.SIGTERM)
        try:
            dev.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait(15)
        processes.delete_prefixed(redis_client, prefix)


def _get_when_up(url: str, deadline: float) -> str:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return str(response.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
