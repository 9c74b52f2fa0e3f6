"""Shared fixtures: Django set up with an isolated key prefix, a real Redis,
and (for integration tests) a real daphne and a real Celery worker process."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
import redis

# Every test session gets its own key prefix and queue, so it never sees (or
# deletes) the data of a developer's running stack or of another session.
SESSION_PREFIX = f"tptest{secrets.token_hex(3)}"
os.environ["TASKPULSE_PREFIX"] = SESSION_PREFIX
os.environ["CELERY_TASK_DEFAULT_QUEUE"] = SESSION_PREFIX
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
# Development mode (the example site is production unless told otherwise).
os.environ.setdefault("DJANGO_DEBUG", "1")
# The suite starts many tasks from one address; the limit tests set their own rates.
os.environ.setdefault("TASKPULSE_START_RATE", "0")
os.environ.setdefault("TASKPULSE_CANCEL_RATE", "0")

import django  # noqa: E402

django.setup()

from tests import processes  # noqa: E402

if TYPE_CHECKING:
    from tests.publishing import PublishingStore

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: {exc} (start redis-server)")
    yield client
    processes.delete_prefixed(client, SESSION_PREFIX)
    client.close()


@pytest.fixture
def store(redis_client: redis.Redis) -> PublishingStore:
    """The record store on this process's connection (what the worker and views use),
    publishing through the publisher (tests/publishing.py)."""
    from progress.store.connections import sync_client
    from tests.publishing import PublishingStore

    return PublishingStore(sync_client())


@pytest.fixture
def task_id(request: pytest.FixtureRequest, store: PublishingStore) -> Iterator[str]:
    """A task id of this test's own, with no record before or after it."""
    from progress.store import keys
    from progress.store.connections import sync_client

    tid = f"t-{request.node.name}"[:80]
    store.delete(tid)
    yield tid
    store.delete(tid)
    sync_client().zrem(keys.running_index_key(), tid)


@dataclass
class Stack:
    port: int
    env: dict[str, str]
    web: processes.Proc
    worker: processes.Proc

    @property
    def http(self) -> str:
        return processes.http_url(self.port)

    @property
    def ws(self) -> str:
        return processes.ws_url(self.port)

    def restart_web(self) -> None:
        self.web.stop()
        self.web = processes.start_daphne(self.env, self.port)


@pytest.fixture(scope="session")
def stack(redis_client: redis.Redis) -> Iterator[Stack]:
    """daphne + a Celery worker against the real Redis, for the whole session."""
    env = processes.stack_env(SESSION_PREFIX, SESSION_PREFIX)
    port = processes.free_port()
    worker = processes.start_worker(env, f"{SESSION_PREFIX}-w1")
    try:
        web = processes.start_daphne(env, port)
    except Exception:
        worker.stop()
        raise
    running = Stack(port, env, web, worker)
    yield running
    running.web.stop()
    running.worker.stop()
