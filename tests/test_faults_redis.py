"""Redis restarted mid-run (a private redis-server on a spare port, never the shared one)."""

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import processes
from tests.client import Http
from tests.faultkit import (
    PrivateStack,
    Watcher,
    own_redis,
    private_stack,
    restart_redis,
    watch_until_final,
)

pytestmark = pytest.mark.integration

TASKS = 12
OUTAGE = 5.0  # longer than redis-py's retries (~3 s): the worker outbox must buffer


# With the AsyncResult mirror on, Celery's result-backend retries hold the task
# through the outage; with it off, the task keeps running and progress/store/outbox.py
# buffers its events until Redis is back.
@pytest.fixture(params=["1", "0"], ids=["asyncresult-mirror", "outbox-only"])
def redis_and_stack(request: pytest.FixtureRequest,
                    tmp_path: Path) -> Iterator[tuple[processes.Proc, PrivateStack]]:
    env = {"TASKPULSE_ASYNCRESULT": request.param}
    with own_redis(str(tmp_path)) as (url, server), private_stack(env, redis_url=url,
                                                                  concurrency=4) as stack:
        yield server, stack


async def test_redis_restart_mid_run(redis_and_stack: tuple[processes.Proc, PrivateStack]) -> None:
    """Redis goes away for 5 s while tasks run and clients watch: every task still ends SUCCESS,
    every watcher sees it, without gaps or duplicates, and no connection is closed."""
    server, stack = redis_and_stack
    http = Http(stack.http())
    tokens = http.start_many(TASKS, steps=30, delay=0.2)
    watcher = Watcher()
    restarted = threading.Event()

    async def restart_soon() -> None:
        await asyncio.sleep(2.0)  # let the tasks get going, then take Redis away
        await asyncio.to_thread(restart_outage, server)
        restarted.set()

    restarter = asyncio.create_task(restart_soon())
    try:
        await watch_until_final(stack.ws(), tokens, watcher, timeout=90, reconnects=0)
    finally:
        await asyncio.wait([restarter], timeout=30)
    assert restarted.is_set()
    assert watcher.violations == []
    errors = [f["error"] for f in watcher.final.values() if f["state"] != "SUCCESS"]
    assert errors == []
    assert {t: f["state"] for t, f in watcher.final.items()} == dict.fromkeys(tokens, "SUCCESS")
    for final in watcher.final.values():
        assert final["result"] == {"steps": 30}
    assert "TaskPulse consumer failed" not in stack.webs[0].output(10_000)  # no crashed consumer


def restart_outage(server: processes.Proc) -> None:
    restart_redis(server, down_for=OUTAGE)
