"""Scale-out: several web processes and several workers on one Redis.

A client connected to any web process receives the events of tasks run by any
worker, because the pub/sub channel layer delivers each PUBLISH to every
process with a subscriber (docs/SCALING.md).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from progress.tokens import issue_token
from tests import processes
from tests.client import Ws, connect
from tests.conftest import SESSION_PREFIX

pytestmark = pytest.mark.integration

TASKS = 4
STEPS = 8


@dataclass
class Cluster:
    ports: list[int]
    workers: list[processes.Proc]
    queue: str

    def ws(self, index: int) -> str:
        return processes.ws_url(self.ports[index])


@pytest.fixture(scope="module")
def cluster(redis_client: redis.Redis) -> Iterator[Cluster]:
    """Two daphne processes and two single-slot workers, on their own queue."""
    queue = f"{SESSION_PREFIX}-scale"
    env = processes.stack_env(SESSION_PREFIX, queue)
    ports = [processes.free_port(), processes.free_port()]
    workers = [processes.worker(env, f"{queue}-w{i}", concurrency=1) for i in (1, 2)]
    webs = [processes.daphne(env, port) for port in ports]
    with processes.running(*workers, *webs):
        for proc in [*workers, *webs]:
            proc.start()
        for worker in workers:
            worker.wait_marker()
        for web, port in zip(webs, ports, strict=True):
            processes.wait_http_ok(f"http://127.0.0.1:{port}/healthz", proc=web)
        yield Cluster(ports, workers, queue)


async def watch_all(url: str, tasks: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Subscribe one socket to every task; every frame per task up to its final one."""
    frames: dict[str, list[dict[str, Any]]] = {task_id: [] for task_id in tasks}
    async with connect(url) as conn:
        ws = Ws(conn)
        for task_id, token in tasks.items():
            await ws.subscribe(task_id, token)
        finals = 0
        async with asyncio.timeout(60):
            while finals < len(tasks):
                frame = await ws.recv()
                if frame.get("task_id") in frames:
                    frames[frame["task_id"]].append(frame)
                    finals += bool(frame.get("final"))
    return frames


Frames = dict[str, list[dict[str, Any]]]


async def watch_while_starting(urls: list[str], tasks: dict[str, str],
                               start: Callable[[], None]) -> list[Frames]:
    """One socket per URL watches every task (watch_all), subscribed before `start()`
    queues them; what each socket saw."""
    watchers = [asyncio.create_task(watch_all(url, tasks)) for url in urls]
    await asyncio.sleep(0.5)  # every socket subscribed before the first event
    start()
    return list(await asyncio.gather(*watchers))


async def test_any_web_process_delivers_events_from_any_worker(cluster: Cluster) -> None:
    """Clients on two daphne processes both see every task run by two workers, in order."""
    from tests.tasks import slow_steps

    tasks = {f"scale-{uuid.uuid4().hex}": "" for _ in range(TASKS)}
    for task_id in tasks:
        tasks[task_id] = issue_token(task_id)

    def start() -> None:
        for task_id in tasks:
            slow_steps.apply_async(kwargs={"steps": STEPS, "delay": 0.1}, task_id=task_id,
                                   queue=cluster.queue)

    seen_by = await watch_while_starting([cluster.ws(0), cluster.ws(1)], tasks, start)

    for frames in seen_by:
        for task_id in tasks:
            got = frames[task_id]
            seqs = [f["seq"] for f in got]
            assert got[0]["type"] == "snapshot" and got[-1]["state"] == "SUCCESS"
            assert seqs == list(range(seqs[0], seqs[-1] + 1)), seqs
            assert sum(f["state"] == "PROGRESS" for f in got) >= 1
    assert [f["seq"] for f in seen_by[0][task_id]][-1] == [
        f["seq"] for f in seen_by[1][task_id]][-1]
    ran_on = [{t for t in tasks if any(t in line for line in w.lines)} for w in cluster.workers]
    assert all(ran_on), f"each worker should have run a task: {ran_on}"
