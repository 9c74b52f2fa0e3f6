"""Redis Sentinel: one setting (REDIS_SENTINELS + REDIS_SENTINEL_MASTER) configures the
record store and the channel layer; delivery carries on through a planned fail-over
(SENTINEL FAILOVER, whichever sentinel leads it) and through a killed master.

Private processes only, as an operator runs Sentinel: a master, two replicas and
three sentinels (quorum 2) on spare ports; the worker and daphne reach Redis
through the sentinels alone, and Celery uses the plain shared Redis (SCALING.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from django.test import override_settings

from progress.publisher.heartbeat import Heartbeat
from progress.store import keys, lua, sweeper
from progress.store.records import EventDraft
from progress.wire.states import State
from tests import processes
from tests.client import Http
from tests.conftest import REDIS_URL
from tests.faultkit import Watcher, watch_until_final
from tests.publishing import PublishingStore

pytestmark = pytest.mark.integration

MASTER = "tpmaster"
SENTINELS, QUORUM = 3, 2
TASKS = 20
# 24 s of steps: each task outlives the election, the switch and the old master's
# demotion (Sentinel converts it to a replica ~8 s after the switch).
STEPS, DELAY = 60, 0.4
FAIL_OVER_AFTER = 2.0  # seconds after every task has sent a progress event
STALL = 4.0  # the stack's stall timeout: short, so that a stale deadline would be seen
LATE = 1.0  # no event may reach the old master this long after the new one is named
WAIT = 45.0
PUBLISH_SHA = hashlib.sha1(lua.PUBLISH.encode()).hexdigest()


@dataclass
class SentinelSet:
    """The data servers (port -> process) and the sentinels (in REDIS_SENTINELS order)."""

    data: dict[int, processes.Proc]
    sentinel_ports: list[int]
    data_dir: Path
    sentinels: list[redis.Redis] = field(default_factory=list)

    def named(self) -> list[int | None]:
        """The master port each sentinel names now (None: it did not answer)."""
        found: list[int | None] = []
        for sentinel in self.sentinels:
            try:
                address: Any = sentinel.sentinel_get_master_addr_by_name(MASTER)
            except redis.RedisError:
                address = None
            found.append(int(address[1]) if address else None)
        return found

    def master_port(self) -> int:
        return self.wait_settled()

    def settled(self) -> int | None:
        """The master, once every sentinel names it with no fail-over flag, knows both
        replicas up, and the replicas are in sync with it; else None."""
        ports = set(self.named())
        if len(ports) != 1 or None in ports:
            return None
        port = ports.pop()
        assert port is not None
        for sentinel in self.sentinels:
            state: Any = sentinel.sentinel_master(MASTER)
            flags = state["flags"] if isinstance(state["flags"], set) else set(
                str(state["flags"]).split(","))
            if flags != {"master"}:
                return None
            replicas: Any = sentinel.sentinel_slaves(MASTER)
            live = [r for r in replicas if not (r["is_sdown"] or r["is_odown"])
                    and r.get("master-link-status") == "ok"]
            if len(live) != SENTINELS - 1:
                return None
        for other in self.data:
            if other != port and self.role(other) != "slave":
                return None
        return port

    def wait_settled(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while (port := self.settled()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the sentinels did not settle in {timeout}s: {self.named()}")
            time.sleep(0.2)
        return port

    def wait_agreed(self, timeout: float = 60.0) -> int:
        """The master, once every sentinel names the same one."""
        deadline = time.monotonic() + timeout
        while len(ports := set(self.named())) != 1 or None in ports:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the sentinels did not agree in {timeout}s: {ports}")
            time.sleep(0.2)
        port = ports.pop()
        assert port is not None
        return port

    def role(self, port: int) -> str:
        client = redis.Redis(port=port, socket_timeout=2)
        try:
            role: Any = client.execute_command("ROLE")  # type: ignore[no-untyped-call]
            return str(role[0].decode())
        except redis.RedisError:
            return "down"
        finally:
            client.close()

    def stop_data(self) -> None:
        for proc in self.data.values():
            proc.stop()

    def env(self) -> dict[str, str]:
        return {"REDIS_SENTINELS": ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports),
                "REDIS_SENTINEL_MASTER": MASTER}

    def fail_over(self, via: int) -> None:
        """SENTINEL FAILOVER sent to sentinel `via`, retried while it knows no good replica."""
        deadline = time.monotonic() + WAIT
        while True:
            try:
                sentinel: Any = self.sentinels[via]
                sentinel.execute_command("SENTINEL FAILOVER", MASTER)
                return
            except redis.ResponseError as exc:  # NOGOODSLAVE / INPROG: not ready yet
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no fail-over in {WAIT}s: {exc}") from exc
                time.sleep(0.2)

    def wait_named_other(self, old: int) -> float:
        """When a sentinel first named a master other than `old` (polled every 20 ms)."""
        deadline = time.monotonic() + WAIT
        while not any(port not in (None, old) for port in self.named()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no new master named in {WAIT}s")
            time.sleep(0.02)
        return time.time()


def new_dir(parent: Path, name: str) -> str:
    path = parent / name
    path.mkdir()
    return str(path)


@pytest.fixture(scope="module")
def sentinel_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    with ExitStack() as stack:
        data_dir = tmp_path_factory.mktemp("sentinel-set")
        master_port = processes.free_port()
        master = processes.start_redis(master_port, new_dir(data_dir, "m"), persistent=False)
        found = SentinelSet({master_port: master}, [], data_dir)
        stack.callback(found.stop_data)
        for index in range(SENTINELS - 1):
            port = processes.free_port()
            found.data[port] = processes.start_replica(port, new_dir(data_dir, f"r{index}"),
                                                       master_port)
        for index in range(SENTINELS):
            port = processes.free_port()
            proc = processes.start_sentinel(port, new_dir(data_dir, f"s{index}"), MASTER,
                                            master_port, quorum=QUORUM)
            stack.callback(proc.stop)
            found.sentinel_ports.append(port)
            client = redis.Redis(port=port, socket_timeout=2)
            stack.callback(client.close)
            found.sentinels.append(client)
        found.wait_settled()
        yield found


@dataclass
class Stack:
    prefix: str
    worker: processes.Proc
    web: processes.Proc
    web_port: int


@pytest.fixture(scope="module")
def stack(sentinel_set: SentinelSet) -> Iterator[Stack]:
    """The example site's web process and a Celery worker that runs every task at once."""
    prefix = f"tpsent{secrets.token_hex(3)}"
    env = processes.stack_env(prefix, prefix, {
        **sentinel_set.env(), "TASKPULSE_STALL_TIMEOUT": str(STALL),
        "CELERY_BROKER_URL": REDIS_URL, "CELERY_RESULT_BACKEND": REDIS_URL})
    env.pop("REDIS_URL", None)  # REDIS_SENTINELS replaces it
    web_port = processes.free_port()
    worker = processes.worker(env, f"{prefix}-w", concurrency=TASKS)
    web = processes.daphne(env, web_port)
    with processes.running(worker, web):
        worker.start()
        web.start()
        worker.wait_marker(90)
        processes.wait_http_ok(f"http://127.0.0.1:{web_port}/healthz", proc=web)
        yield Stack(prefix, worker, web, web_port)
    shared = redis.Redis.from_url(REDIS_URL)
    try:
        processes.delete_prefixed(shared, prefix)
    finally:
        shared.close()


class WriteLog(threading.Thread):
    """When the record script ran on one server (its MONITOR feed), until stopped or
    until the server drops the feed (Sentinel does so when it demotes a master)."""

    def __init__(self, port: int, prefix: str) -> None:
        super().__init__(daemon=True)
        self.port, self.prefix = port, prefix
        self.times: list[float] = []
        self._stop_event = threading.Event()
        # No read timeout: redis-py drops a connection whose read timed out, and the
        # MONITOR with it. stop() wakes the reader with a command of its own.
        self._client = redis.Redis(port=port)
        client: Any = self._client
        self._monitor = client.monitor()
        self._monitor.__enter__()  # MONITOR is on before the thread starts: nothing missed

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                command = self._monitor.next_command()
                text = str(command.get("command", ""))
                if text.startswith("EVALSHA " + PUBLISH_SHA) and f"{self.prefix}:" in text:
                    self.times.append(float(command["time"]))
        except (redis.ConnectionError, OSError):
            pass  # the server closed the feed (demoted) or went away
        finally:
            self._client.close()

    def stop(self) -> None:
        self._stop_event.set()
        waker = redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2)
        try:
            waker.ping()
        except redis.RedisError:
            pass  # the server is gone: so is the feed
        finally:
            waker.close()
        self.join(5)
        assert not self.is_alive(), "the MONITOR feed did not stop"


class TimedWatcher(Watcher):
    """A Watcher that also keeps each event frame's state."""

    def __init__(self) -> None:
        super().__init__()
        self.states: list[str] = []
        self.arrivals: dict[str, list[float]] = {}  # task -> when its events arrived

    def check(self, frame: dict[str, Any]) -> None:
        if frame.get("type") in ("event", "snapshot"):
            self.states.append(str(frame.get("state")))
            self.arrivals.setdefault(str(frame.get("task_id")), []).append(time.time())
        super().check(frame)

    def longest_pause(self) -> float:
        """The longest a watched task went without an event reaching its watcher."""
        return max((later - earlier for times in self.arrivals.values()
                    for earlier, later in itertools.pairwise(times)), default=0.0)


@dataclass
class Run:
    """What one fail-over under 20 watched tasks did."""

    watcher: TimedWatcher
    named_at: float  # when a sentinel first named the new master
    late_writes: list[float]  # seconds after named_at of events on the old master past LATE
    writes_after: list[float]  # seconds after named_at of every event on the old master
    old_master: int
    new_master: int
    worker_log: list[str]
    web_log: list[str]


async def run_through(sentinels: SentinelSet, stack: Stack, fail_over: Any) -> Run:
    """Start TASKS tasks, watch them all; once each sent progress, call `fail_over(old)`;
    wait for every final."""
    old = sentinels.wait_settled()
    worker_from, web_from = len(stack.worker.lines), len(stack.web.lines)
    http = Http(processes.http_url(stack.web_port))
    tokens = {}
    for _ in range(TASKS):
        status, started = http.start(steps=STEPS, delay=DELAY)
        assert status == 202, started
        tokens[started["task_id"]] = started["token"]
    watcher = TimedWatcher()
    writes = WriteLog(old, stack.prefix)
    writes.start()
    watching = asyncio.create_task(
        watch_until_final(processes.ws_url(stack.web_port), tokens, watcher, timeout=120))
    try:
        deadline = time.monotonic() + WAIT
        while sum(seq > 1 for _, seq in watcher.last.values()) < TASKS:
            assert time.monotonic() < deadline and not watching.done(), "not all started"
            await asyncio.sleep(0.1)
        await asyncio.sleep(FAIL_OVER_AFTER)
        named_at = await asyncio.to_thread(fail_over, old)
        await watching
    finally:
        watching.cancel()
        writes.stop()
    new = await asyncio.to_thread(sentinels.wait_agreed)
    after = [at - named_at for at in writes.times if at > named_at]
    run = Run(watcher, named_at, [delay for delay in after if delay > LATE], after, old, new,
              stack.worker.lines[worker_from:], stack.web.lines[web_from:])
    # The figures docs/SCALING.md quotes (pytest -s shows them).
    last = max(writes.times, default=named_at) - named_at
    print(f"\nfail-over {old} -> {new}: longest pause {watcher.longest_pause():.1f} s; "
          f"{len(after)} of {len(writes.times)} events on the old master after the switch, "
          f"the last {last:+.2f} s from it")
    return run


def assert_delivered_without_loss(run: Run) -> None:
    """Every watcher saw SUCCESS by PROTOCOL.md's rules, nothing LOST or re-recorded, and
    no event went to the replaced master more than LATE after the new one was named."""
    assert run.new_master != run.old_master
    assert run.watcher.violations == []
    assert {final["state"] for final in run.watcher.final.values()} == {"SUCCESS"}
    assert len(run.watcher.final) == TASKS
    assert "LOST" not in run.watcher.states
    logs = run.worker_log + run.web_log
    assert [line for line in logs if "is LOST" in line] == []
    assert [line for line in logs if "lost its final state" in line] == []
    assert run.late_writes == [], f"events on the old master {run.late_writes} s after the switch"


@pytest.mark.parametrize("via", range(SENTINELS), ids=[f"via-sentinel-{i}" for i in range(3)])
async def test_planned_fail_over_loses_nothing(sentinel_set: SentinelSet, stack: Stack,
                                               via: int) -> None:
    """20 watched tasks through SENTINEL FAILOVER sent to each sentinel in turn (the first,
    which redis-py would ask first, included): every watcher gets SUCCESS, nothing is
    LOST or recorded again, and no event reaches the old master 1 s after the switch."""

    def fail_over(old: int) -> float:
        sentinel_set.fail_over(via)
        return sentinel_set.wait_named_other(old)

    run = await run_through(sentinel_set, stack, fail_over)
    assert_delivered_without_loss(run)


async def test_killed_master_loses_nothing(sentinel_set: SentinelSet, stack: Stack) -> None:
    """The same 20 watched tasks through a SIGKILLed master: Sentinel promotes a replica,
    every watcher gets SUCCESS, nothing is LOST or recorded again."""
    killed: dict[str, int] = {}

    def kill(old: int) -> float:
        sentinel_set.data[old].kill()
        killed["port"] = old
        return sentinel_set.wait_named_other(old)

    def restart_as_replica() -> None:
        # Back as a replica of the new master, so the set has two replicas again.
        port = killed["port"]
        master = next(p for p in sentinel_set.named() if p not in (None, port))
        assert master is not None
        sentinel_set.data[port] = processes.start_replica(
            port, new_dir(sentinel_set.data_dir, f"k{port}"), master)

    try:
        run = await asyncio.wait_for(run_through(sentinel_set, stack, kill), 180)
    finally:
        if "port" in killed:
            await asyncio.to_thread(restart_as_replica)
    assert_delivered_without_loss(run)


def test_a_sweeper_on_a_replaced_master_marks_nothing_lost(sentinel_set: SentinelSet) -> None:
    """A sweeper that reads the old master after a fail-over (its deadlines stale: the
    heartbeat moved to the new one) marks nothing LOST, while the sentinels still
    name the old one in a fail-over and after the old master is demoted."""
    stall = 1.0
    prefix = f"tpstale{secrets.token_hex(3)}"
    task_id = f"stale-{secrets.token_hex(4)}"
    with override_settings(TASKPULSE_REDIS_URL="", TASKPULSE_REDIS_SENTINELS=sentinel_set.env()[
            "REDIS_SENTINELS"], TASKPULSE_REDIS_SENTINEL_MASTER=MASTER,
            TASKPULSE_STALL_TIMEOUT=stall, TASKPULSE_KEY_PREFIX=prefix):
        from progress.store.connections import sync_client

        old = sentinel_set.wait_settled()
        PublishingStore(sync_client()).publish(
            EventDraft(task_id, State.STARTED, name="t", stall_timeout=stall))
        beat = Heartbeat()
        beat.begin(task_id)
        stale = redis.Redis(port=old, socket_timeout=5)
        marked: list[str] = []
        try:
            sentinel_set.fail_over(0)
            sentinel_set.wait_named_other(old)
            # Sweep the old master until well after its demotion; it is the one
            # server whose deadline for the task is not being pushed out.
            deadline = time.monotonic() + WAIT
            while sentinel_set.role(old) != "slave" and time.monotonic() < deadline:
                marked += sweeper.sweep_once(stale)
                marked += sweeper.sweep_once()
                time.sleep(0.1)
            for _ in range(10):
                marked += sweeper.sweep_once(stale) + sweeper.sweep_once()
                time.sleep(0.1)
            assert sentinel_set.role(old) == "slave"
        finally:
            beat.end(task_id)
            beat.stop()
            stale.close()
        assert marked == []
        new = sentinel_set.wait_settled()
        client = redis.Redis(port=new, socket_timeout=5)
        try:
            history = [json.loads(raw)["state"]
                       for raw in client.lrange(keys.history_key(task_id), 0, -1)]
            client.delete(keys.record_key(task_id), keys.history_key(task_id))
            client.zrem(keys.running_index_key(), task_id)
        finally:
            client.close()
        assert "LOST" not in history
