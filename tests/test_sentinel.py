"""Redis Sentinel: one setting (REDIS_SENTINELS + REDIS_SENTINEL_MASTER) configures the
record store, the channel layer and Celery; delivery carries on through a fail-over.

Private processes only: a master, its replica and one sentinel (quorum 1) on
spare ports; the worker and daphne reach Redis through the sentinel alone.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from tests import processes
from tests.client import Http
from tests.faultkit import Watcher, watch_until_final

pytestmark = pytest.mark.integration

MASTER = "tpmaster"
# 16 s of steps: the task outlives the fail-over (2 s in) and the old master's demotion
# (Sentinel converts it to a replica ~10 s after the switch; the web process listens to
# it until then), so events are published on the new master before and after that.
STEPS = 40
DELAY = 0.4
FAILOVER_AFTER = 2.0
WAIT = 30.0


@dataclass
class SentinelSetup:
    prefix: str
    sentinel: redis.Redis
    ports: dict[str, int]  # "master", "replica": the data servers' ports at the start
    web_port: int

    def master_port(self) -> int:
        address: Any = self.sentinel.sentinel_get_master_addr_by_name(MASTER)
        return int(address[1])

    def data(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=5)


@pytest.fixture(scope="module")
def sentinel_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    prefix = f"tpsent{secrets.token_hex(3)}"
    ports = {"master": processes.free_port(), "replica": processes.free_port()}
    sentinel_port, web_port = processes.free_port(), processes.free_port()
    with ExitStack() as stack:
        master = processes.start_redis(ports["master"], str(tmp_path_factory.mktemp("master")),
                                       persistent=False)
        stack.callback(master.stop)
        replica = processes.start_replica(ports["replica"], str(tmp_path_factory.mktemp("rep")),
                                          ports["master"])
        stack.callback(replica.stop)
        sentinel = processes.start_sentinel(sentinel_port, str(tmp_path_factory.mktemp("sent")),
                                            MASTER, ports["master"])
        stack.callback(sentinel.stop)
        env = processes.stack_env(prefix, prefix, {
            "REDIS_SENTINELS": f"127.0.0.1:{sentinel_port}", "REDIS_SENTINEL_MASTER": MASTER})
        env.pop("REDIS_URL", None)  # REDIS_SENTINELS replaces it
        worker = processes.worker(env, f"{prefix}-w", concurrency=2)
        web = processes.daphne(env, web_port)
        for proc in (worker, web):
            stack.callback(proc.stop)
            proc.start()
        worker.wait_marker()
        processes.wait_http_ok(f"http://127.0.0.1:{web_port}/healthz", proc=web)
        client = redis.Redis(port=sentinel_port, socket_timeout=5)
        stack.callback(client.close)
        yield SentinelSetup(prefix, client, ports, web_port)


def fail_over(setup: SentinelSetup) -> float:
    """SENTINEL FAILOVER, retried until the sentinel knows a good replica; the time the
    sentinel named the replica the master."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            setup.sentinel.sentinel_failover(MASTER)
            break
        except redis.ResponseError as exc:  # NOGOODSLAVE: the replica is not known yet
            if time.monotonic() > deadline:
                raise TimeoutError(f"no fail-over in {WAIT}s: {exc}") from exc
            time.sleep(0.2)
    while setup.master_port() != setup.ports["replica"]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the replica was not promoted in {WAIT}s")
        time.sleep(0.1)
    return time.time()


class TimedWatcher(Watcher):
    """A Watcher that also notes when each event frame arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[float, str]] = []  # (arrival time, state)

    def check(self, frame: dict[str, Any]) -> None:
        if frame.get("type") == "event":
            self.events.append((time.time(), frame["state"]))
        super().check(frame)


async def test_events_reach_a_client_through_sentinel_and_a_fail_over(
        sentinel_setup: SentinelSetup) -> None:
    """A task started over HTTP delivers its events to a WebSocket client through the
    Sentinel-configured stack; after SENTINEL FAILOVER delivery carries on on the same
    connection by PROTOCOL.md's rules, and the final SUCCESS is delivered and recorded."""
    setup = sentinel_setup
    assert setup.master_port() == setup.ports["master"]
    status, started = Http(processes.http_url(setup.web_port)).start(steps=STEPS, delay=DELAY)
    assert status == 202, started
    task_id = started["task_id"]
    watcher = TimedWatcher()

    async def fail_over_soon() -> float:
        await asyncio.sleep(FAILOVER_AFTER)
        return await asyncio.to_thread(fail_over, setup)

    failing_over = asyncio.create_task(fail_over_soon())
    try:
        connections = await watch_until_final(processes.ws_url(setup.web_port),
                                              {task_id: started["token"]}, watcher, timeout=60)
    finally:
        switched_at = await asyncio.wait_for(failing_over, WAIT)

    assert watcher.violations == []
    assert connections == 1
    final = watcher.final[task_id]
    assert final["state"] == "SUCCESS" and final["result"] == {"steps": STEPS}
    assert any(at < switched_at for at, _ in watcher.events)
    assert sum(state == "PROGRESS" for at, state in watcher.events if at > switched_at) >= 3
    new_master = setup.data(setup.ports["replica"])
    try:
        record = new_master.hget(f"{setup.prefix}:task:{{{task_id}}}", "json") or b""
    finally:
        new_master.close()
    assert json.loads(record)["state"] == "SUCCESS"
