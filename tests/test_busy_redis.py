"""A Redis that answers "not now" (-BUSY while a long script runs, -LOADING while
it replays its AOF) is treated like an unreachable one: the worker keeps the
events, finals included, and delivers them once Redis takes writes again; a
progress call never raises into the task."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from django.test import override_settings

from progress.publisher import publish, store
from progress.store import outbox
from progress.store.records import EventDraft
from progress.wire.states import State
from tests import processes
from tests.fakeredis_loading import LoadingThenRealServer

BUSY_AFTER_MS = 50
SPIN_FOREVER = "local i = 0 while true do i = i + 1 end"
DELIVERY_TIMEOUT = 15.0


@pytest.fixture
def busy_capable_redis(tmp_path: object) -> Iterator[str]:
    """A private redis-server that answers -BUSY 50 ms into a long script."""
    port = processes.free_port()
    proc = processes.Proc(f"redis:{port}", [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--busy-reply-threshold", str(BUSY_AFTER_MS)], {},
        ready_marker="Ready to accept connections").start()
    proc.wait_marker()
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.stop()


def recorded_state(task_id: str) -> str | None:
    found = store().read(task_id).snapshot
    return None if found is None else found.json.split('"state":"', 1)[1].split('"', 1)[0]


def wait_for_state(task_id: str, state: str) -> None:
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while recorded_state(task_id) != state:
        assert time.monotonic() < deadline, f"{task_id} never reached {state}"
        time.sleep(0.05)


def test_a_busy_redis_keeps_the_final_event(busy_capable_redis: str) -> None:
    """SUCCESS published while Redis is -BUSY is buffered, not raised or dropped, and
    recorded once the script is killed."""
    task_id = f"t-busy-{uuid.uuid4().hex[:6]}"
    spinner = redis.Redis.from_url(busy_capable_redis)
    admin = redis.Redis.from_url(busy_capable_redis)
    with override_settings(TASKPULSE_SHARDS=[busy_capable_redis], CHANNEL_LAYERS={}):
        publish(EventDraft(task_id, State.STARTED, name="t"))
        blocker = threading.Thread(target=lambda: _spin(spinner), daemon=True)
        blocker.start()
        time.sleep(BUSY_AFTER_MS * 3 / 1000)
        outcome = publish(EventDraft(task_id, State.SUCCESS, result_json="42"))
        assert not outcome.accepted  # buffered, not raised into the task
        assert len(outbox.outbox()) == 1
        _kill_script(admin)
        blocker.join(5)
        wait_for_state(task_id, "SUCCESS")
        store().delete(task_id)
    spinner.close()
    admin.close()


def test_a_loading_redis_keeps_the_final_event() -> None:
    """-LOADING (an AOF replay after a restart; reproduced by a fake server in front of
    the real one) buffers the event; once loading ends it is recorded."""
    task_id = f"t-loading-{uuid.uuid4().hex[:6]}"
    with LoadingThenRealServer("127.0.0.1", 6379) as fake, \
            override_settings(TASKPULSE_SHARDS=[fake.url], CHANNEL_LAYERS={}):
        outcome = publish(EventDraft(task_id, State.SUCCESS, result_json="1"))
        assert not outcome.accepted and len(outbox.outbox()) == 1
        fake.finish_loading()
        wait_for_state(task_id, "SUCCESS")
        store().delete(task_id)


def _spin(client: redis.Redis) -> None:
    with contextlib.suppress(redis.RedisError):  # killed: the point of the test
        client.eval(SPIN_FOREVER, 0)


def _kill_script(admin: redis.Redis) -> None:
    deadline = time.monotonic() + 5
    while True:
        try:
            admin.script_kill()
            return
        except redis.ResponseError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
