"""Sharding over two private redis-servers (REDIS_SHARD_URLS), two web processes, one worker.

Each task lives on the shard channels_redis subscribes its group on
(progress/store/shards.py): its record, history and PUBLISH are there, and every
reader (WebSocket, status view, cancel, sweeper) finds it there.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import types
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import pytest
import redis
from channels_redis.utils import _consistent_hash
from django.test import override_settings

from progress.store import keys, shards
from progress.store.records import EventDraft
from progress.tokens import issue_token
from progress.wire.states import State
from tests import processes
from tests.client import Http, Ws, connect
from tests.conftest import REDIS_URL
from tests.test_scaleout import watch_while_starting

pytestmark = pytest.mark.integration

STEPS = 4
STALL = 3.0  # the stack's TASKPULSE_STALL_TIMEOUT: sweeps every 0.5 s
WAIT = 30.0


@dataclass
class Sharded:
    prefix: str
    urls: list[str]
    servers: list[redis.Redis]
    ports: list[int]
    started: float

    def ws(self, i: int) -> str:
        return processes.ws_url(self.ports[i])

    def http(self, i: int) -> Http:
        return Http(processes.http_url(self.ports[i]))

    @contextmanager
    def as_settings(self) -> Iterator[None]:
        """This process configured as the stack is (to ask the mapping, to write a record)."""
        layer = {"BACKEND": "consumers.layer.ResyncingPubSubChannelLayer",
                 "CONFIG": {"hosts": self.urls, "prefix": self.prefix}}
        with override_settings(TASKPULSE_SHARDS=self.urls, CHANNEL_LAYERS={"taskpulse": layer},
                               TASKPULSE_KEY_PREFIX=self.prefix):
            yield

    def shard_of(self, task_id: str) -> int:
        with self.as_settings():
            return shards.shard_of(task_id)

    def ids_on(self, shard: int, count: int, stem: str) -> list[str]:
        """Task ids whose group channel hashes to `shard`."""
        found: list[str] = []
        while len(found) < count:
            task_id = f"{stem}-{secrets.token_hex(6)}"
            if self.shard_of(task_id) == shard:
                found.append(task_id)
        return found

    def holder(self, task_id: str) -> list[int]:
        """The shards that hold a record for `task_id`, asked directly."""
        record = f"{self.prefix}:task:{{{task_id}}}"
        return [i for i, server in enumerate(self.servers) if server.exists(record)]



@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory,
            redis_client: redis.Redis) -> Iterator[Sharded]:
    """Two private shards; Celery's broker is the session's Redis (on a queue of the
    stack's own), so this process can start tasks and groups there."""
    prefix = f"tpshard{secrets.token_hex(3)}"
    with ExitStack() as stack:
        stack.callback(processes.delete_prefixed, redis_client, prefix)
        redis_ports = [processes.free_port(), processes.free_port()]
        for port in redis_ports:
            redis_proc = processes.start_redis(port, str(tmp_path_factory.mktemp("shard")),
                                               persistent=False)
            stack.callback(redis_proc.stop)
        urls = [f"redis://127.0.0.1:{port}/0" for port in redis_ports]
        started = time.monotonic()
        env = processes.stack_env(prefix, prefix, {
            "REDIS_SHARD_URLS": ",".join(urls), "TASKPULSE_STALL_TIMEOUT": str(STALL),
            "CELERY_BROKER_URL": REDIS_URL, "CELERY_RESULT_BACKEND": urls[0]})
        env.pop("REDIS_URL", None)  # REDIS_SHARD_URLS replaces it
        ports = [processes.free_port(), processes.free_port()]
        procs = [processes.worker(env, f"{prefix}-w", concurrency=2),
                 *(processes.daphne(env, port) for port in ports)]
        for proc in procs:
            stack.callback(proc.stop)
            proc.start()
        procs[0].wait_marker()
        for web, port in zip(procs[1:], ports, strict=True):
            processes.wait_http_ok(f"http://127.0.0.1:{port}/healthz", proc=web)
        servers = [redis.Redis.from_url(url, socket_timeout=5) for url in urls]
        for client in servers:
            stack.callback(client.close)
        yield Sharded(prefix, urls, servers, ports, started)


def test_mapping_is_channels_redis_hash_of_the_group_channel() -> None:
    """A task's shard is channels_redis' hash of its group channel, over the shard count."""
    urls = ["redis://127.0.0.1:1/0", "redis://127.0.0.1:2/0", "redis://127.0.0.1:3/0"]
    layer = {"BACKEND": "consumers.layer.ResyncingPubSubChannelLayer",
             "CONFIG": {"hosts": urls, "prefix": "tp"}}
    with override_settings(TASKPULSE_SHARDS=urls, CHANNEL_LAYERS={"taskpulse": layer}):
        got = {shards.shard_of(f"task-{i}") for i in range(60)}
        for i in range(60):
            expected = _consistent_hash(keys.group_channel(f"task-{i}"), 3)
            assert shards.shard_of(f"task-{i}") == expected
    assert got == {0, 1, 2}
    assert shards.shard_of("task-1") == 0  # one server again: everything on it


def test_channel_layer_hosts_must_be_the_shards() -> None:
    """A channel layer listing other servers than TASKPULSE_SHARDS is refused with a fix."""
    from django.core.exceptions import ImproperlyConfigured

    layer = {"BACKEND": "consumers.layer.ResyncingPubSubChannelLayer",
             "CONFIG": {"hosts": ["redis://b:6379/0", "redis://a:6379/0"]}}
    with override_settings(TASKPULSE_SHARDS=["redis://a:6379/0", "redis://b:6379/0"],
                           CHANNEL_LAYERS={"taskpulse": layer}), \
            pytest.raises(ImproperlyConfigured, match="same order"):
        shards.servers()


async def test_tasks_on_both_shards_deliver_to_both_web_processes(sharded: Sharded) -> None:
    """Tasks on either shard reach clients on both web processes: every event, in order,
    then SUCCESS; each record is on the shard the mapping names, and only there."""
    ids = sharded.ids_on(0, 2, "zero") + sharded.ids_on(1, 2, "one")
    tasks = {task_id: issue_token(task_id) for task_id in ids}
    from tests.tasks import slow_steps

    def start() -> None:
        with sharded.as_settings():  # PENDING recorded here, as a web process would
            for task_id in ids:
                slow_steps.apply_async(kwargs={"steps": STEPS, "delay": 0.15}, task_id=task_id,
                                       queue=sharded.prefix)

    seen_by = await watch_while_starting([sharded.ws(0), sharded.ws(1)], tasks, start)

    for frames in seen_by:
        for task_id in ids:
            events = [f for f in frames[task_id] if f["type"] == "event"]
            assert frames[task_id][0]["state"] == "UNKNOWN"  # subscribed before it was queued
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
            assert [e["state"] for e in events] == [
                "PENDING", "STARTED", *["PROGRESS"] * STEPS, "SUCCESS"]
            assert events[-1]["result"] == {"steps": STEPS}
    assert {task_id: sharded.holder(task_id) for task_id in ids} == {
        task_id: [sharded.shard_of(task_id)] for task_id in ids}


def test_start_status_and_cancel_on_both_shards(sharded: Sharded) -> None:
    """Tasks started over HTTP land on both shards; the status view and cancel find each."""
    http = sharded.http(1)
    started: dict[str, str] = {}
    while len({sharded.shard_of(t) for t in started}) < 2 and len(started) < 20:
        status, body = http.start(steps=50, delay=0.1)  # a random id: either shard
        assert status == 202, body
        started[body["task_id"]] = body["token"]
    assert {sharded.shard_of(t) for t in started} == {0, 1}
    for task_id, token in started.items():
        assert sharded.holder(task_id) == [sharded.shard_of(task_id)]
        status, body = http.request("POST", f"/api/tasks/{task_id}/cancel/",
                                    headers={"Authorization": f"Bearer {token}"})
        assert status == 202, body
    for task_id, token in started.items():
        deadline = time.monotonic() + WAIT
        while True:
            status, body = http.request("GET", f"/api/tasks/{task_id}/?token={token}")
            assert status == 200, body
            if body["final"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert body["state"] == "REVOKED"


async def test_sweeper_marks_a_dead_task_on_the_second_shard_lost(sharded: Sharded) -> None:
    """A started task on shard 1 whose worker never beats is marked LOST by the web
    processes' sweeper, and a watching client receives it."""
    [task_id] = sharded.ids_on(1, 1, "dead")
    # The sweeper leaves a Redis younger than a stall timeout alone (it may have lost beats).
    await asyncio.sleep(max(0.0, sharded.started + STALL + 0.5 - time.monotonic()))
    with sharded.as_settings():
        from progress.publisher import publish

        publish(EventDraft(task_id, State.STARTED, name="dead", stall_timeout=0.5))
    async with connect(sharded.ws(0)) as conn:
        ws = Ws(conn)
        await ws.subscribe(task_id, issue_token(task_id))
        frames = await ws.frames_until_final(task_id, timeout=WAIT)
    assert frames[-1]["state"] == "LOST" and frames[-1]["error"]["type"] == "WorkerLost"
    record = sharded.servers[1].hget(f"{sharded.prefix}:task:{{{task_id}}}", "json")
    assert record is not None and json.loads(record)["state"] == "LOST"
    assert sharded.holder(task_id) == [1]


async def test_group_on_one_shard_aggregates_members_on_both(
        sharded: Sharded, monkeypatch: pytest.MonkeyPatch) -> None:
    """A group's record and members hash live on the group id's shard; members recorded on
    either shard are aggregated there, and the group ends SUCCESS with every member counted."""
    from progress.integrations.celery import groups
    from tests.tasks import slow_steps

    [group_id] = sharded.ids_on(1, 1, "group")
    members = sharded.ids_on(0, 2, "member") + sharded.ids_on(1, 2, "member")
    chosen = iter([group_id, *members])  # the ids start_group() draws, in its order
    monkeypatch.setattr(groups, "uuid", types.SimpleNamespace(uuid4=lambda: next(chosen)))
    async with connect(sharded.ws(0)) as conn:
        ws = Ws(conn)
        with sharded.as_settings():
            started = groups.start_group(
                [slow_steps.s(steps=2, delay=0.1).set(queue=sharded.prefix) for _ in members])
        assert started == group_id
        await ws.subscribe(group_id, issue_token(group_id))
        frames = await ws.frames_until_final(group_id, timeout=WAIT)
    last = frames[-1]
    assert last["state"] == "SUCCESS" and last["result"] == {"total": 4, "succeeded": 4}
    assert sharded.holder(group_id) == [1]
    assert {m: sharded.holder(m) for m in members} == {m: [sharded.shard_of(m)] for m in members}
    members_key = f"{sharded.prefix}:members:{{{group_id}}}"
    assert [bool(server.exists(members_key)) for server in sharded.servers] == [False, True]
