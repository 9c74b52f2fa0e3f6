"""Stall deadlines, heartbeats, the LOST sweeper and the worker outbox, against the real Redis."""

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.test import override_settings

from progress import conf
from progress.publisher.heartbeat import Heartbeat
from progress.store import keys, sweeper
from progress.store.connections import sync_client
from progress.store.outbox import Outbox
from progress.store.records import EventDraft, PublishOutcome
from progress.wire.event_json import progress_json
from progress.wire.states import State
from tests.conftest import REDIS_URL
from tests.publishing import PublishingStore

STALL = 0.3


@pytest.fixture(autouse=True)
def short_stall() -> Iterator[None]:
    """A short stall timeout: also what the sweeper's just-restarted guard compares with.

    The keys get a prefix of their own: the session's daphne and worker sweep
    the session prefix's running-task index, and would otherwise race these
    tests' own sweeps for the same tasks.
    """
    with override_settings(TASKPULSE_STALL_TIMEOUT=STALL,
                           TASKPULSE_KEY_PREFIX=f"{conf.key_prefix()}:live"):
        yield


def started(task_id: str) -> EventDraft:
    return EventDraft(task_id, State.STARTED, name="t", stall_timeout=STALL)


def history_states(task_id: str) -> list[str]:
    raw = sync_client().lrange(keys.history_key(task_id), 0, -1)
    return [json.loads(e)["state"] for e in raw]


def test_started_task_without_heartbeat_is_lost_once(store: PublishingStore, task_id: str) -> None:
    """Past its deadline a task is marked LOST exactly once, however many sweepers race."""
    store.publish(started(task_id))
    assert task_id not in sweeper.sweep_once()
    time.sleep(STALL + 0.1)
    marked: list[str] = []
    barrier = threading.Barrier(8)

    def sweep() -> None:
        barrier.wait(5)
        marked.extend(m for m in sweeper.sweep_once() if m == task_id)

    threads = [threading.Thread(target=sweep) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert marked == [task_id]
    assert history_states(task_id) == ["STARTED", "LOST"]
    snap = store.read(task_id).snapshot
    assert snap is not None
    obj = json.loads(snap.json)
    assert obj["final"] is True and obj["error"]["type"] == sweeper.LOST_ERROR_TYPE


class JustRestartedRedis(redis.Redis):
    def info(self, *args: Any, **kwargs: Any) -> Any:
        return {"uptime_in_seconds": 0}


def test_no_lost_right_after_a_redis_restart(store: PublishingStore, task_id: str) -> None:
    """Heartbeats missed because Redis was down do not make a task LOST."""
    store.publish(started(task_id))
    time.sleep(STALL + 0.1)
    fresh = JustRestartedRedis.from_url(REDIS_URL)
    try:
        assert sweeper.sweep_once(fresh) == []
    finally:
        fresh.close()
    assert task_id in sweeper.sweep_once()


class FailedOverRedis(redis.Redis):
    """A long-running server whose identity changes: a promoted Sentinel replica."""

    run_id = "old-master"

    def info(self, *args: Any, **kwargs: Any) -> Any:
        return {"uptime_in_seconds": 86_400, "run_id": self.run_id}


def test_no_lost_right_after_a_fail_over(store: PublishingStore, task_id: str) -> None:
    """Deadlines that lapsed while Sentinel elected a new master (a long uptime) get a
    stall timeout's grace on the new server before anything is marked LOST."""
    client = FailedOverRedis(connection_pool=redis.ConnectionPool.from_url(REDIS_URL))
    try:
        assert task_id not in sweeper.sweep_once(client)  # sees the old master
        client.run_id = "promoted-replica"
        store.publish(started(task_id))
        time.sleep(STALL + 0.1)
        assert sweeper.sweep_once(client) == []  # the server changed: grace
        time.sleep(STALL)
        assert task_id in sweeper.sweep_once(client)
    finally:
        client.close()


def is_lost(store: PublishingStore, task_id: str) -> bool:
    snap = store.read(task_id).snapshot
    return snap is not None and json.loads(snap.json)["state"] == "LOST"


def test_a_new_sweeper_waits_a_stall_timeout(store: PublishingStore, task_id: str) -> None:
    """A sweeper that just started (a deploy, a worker spawn, maybe during a fail-over's
    election) marks a task whose deadline has lapsed LOST only a stall timeout after its
    start, not at its first sweep."""
    grace = 1.2
    with override_settings(TASKPULSE_STALL_TIMEOUT=grace):
        store.publish(started(task_id))  # its deadline: STALL
        time.sleep(STALL + 0.1)
        started_at = time.monotonic()
        running = sweeper.Sweeper().start()  # sweeps every 0.2 s
        try:
            time.sleep(grace * 0.7)
            assert not is_lost(store, task_id)
            deadline = time.monotonic() + grace + 5
            while not is_lost(store, task_id) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            running.stop()
    assert is_lost(store, task_id)
    assert time.monotonic() - started_at >= grace


class RestartedRedis(redis.Redis):
    """A server that started when this client was made: INFO's uptime counts from then."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started = time.monotonic()
        self.run_id = f"restarted-{id(self)}-{time.monotonic()}"

    def info(self, *args: Any, **kwargs: Any) -> Any:
        return {"uptime_in_seconds": int(time.monotonic() - self.started),
                "run_id": self.run_id}


def test_a_grace_is_logged_once_at_its_start_and_end(caplog: pytest.LogCaptureFixture) -> None:
    """After a fresh Redis start, a sweep every 0.1 s through the grace logs one line
    when the grace starts and one when it ends, not one per sweep."""
    grace = 1.0
    client = RestartedRedis(connection_pool=redis.ConnectionPool.from_url(REDIS_URL))
    try:
        with override_settings(TASKPULSE_STALL_TIMEOUT=grace), caplog.at_level(
                logging.INFO, logger=sweeper.__name__):
            deadline = time.monotonic() + grace + 2.5  # INFO's whole seconds add up to 1 s
            while time.monotonic() < deadline:
                assert sweeper.sweep_once(client) == []
                time.sleep(0.1)
    finally:
        client.close()
    lines = [record.getMessage() for record in caplog.records if record.name == sweeper.__name__]
    assert [line for line in lines if "not marking" in line] == [
        "TaskPulse: Redis restarted 0s ago; not marking stalled tasks for 1s"]
    assert len([line for line in lines if "grace over" in line]) == 1
    assert len(lines) == 2


def test_heartbeat_keeps_task_alive(store: PublishingStore, task_id: str) -> None:
    """A beating task is never marked LOST, and its deadline is gone once it ends."""
    store.publish(started(task_id))
    beat = Heartbeat()
    beat.begin(task_id)
    try:
        for _ in range(6):
            beat.beat()
            time.sleep(STALL / 3)
            assert task_id not in sweeper.sweep_once()
    finally:
        beat.end(task_id)
        beat.stop()
    store.publish(EventDraft(task_id, State.SUCCESS))
    time.sleep(STALL + 0.1)
    assert task_id not in sweeper.sweep_once()
    assert sync_client().zscore(keys.running_index_key(), task_id) is None


def test_retry_disarms_the_deadline(store: PublishingStore, task_id: str) -> None:
    """A task waiting for its retry is not running, so it cannot be LOST."""
    store.publish(started(task_id))
    store.publish(EventDraft(task_id, State.RETRY))
    time.sleep(STALL + 0.1)
    assert task_id not in sweeper.sweep_once()


def test_lost_accepts_only_a_new_attempt(store: PublishingStore, task_id: str) -> None:
    """After LOST, late events of the lost attempt are refused; a new STARTED is accepted."""
    store.publish(started(task_id))
    time.sleep(STALL + 0.1)
    assert task_id in sweeper.sweep_once()
    late = store.publish(EventDraft(task_id, State.PROGRESS,
                                    progress=progress_json(5, 10, None, None, "{}")))
    assert not late.accepted
    assert store.publish(EventDraft(task_id, State.SUCCESS)).seq == 0
    again = store.publish(EventDraft(task_id, State.STARTED, stall_timeout=60))
    assert again.accepted and again.state == "STARTED"


def test_outbox_buffers_in_order_and_coalesces_progress() -> None:
    """While Redis is away events queue in order, progress coalesced; they flush when it is back."""
    sent: list[EventDraft] = []
    up = threading.Event()

    def send(draft: EventDraft) -> PublishOutcome:
        if not up.is_set():
            raise redis.ConnectionError("down")
        sent.append(draft)
        return PublishOutcome(len(sent), False, draft.state.value)

    box = Outbox(max_events=100)
    try:
        drafts = [EventDraft("a", State.STARTED)]
        drafts += [EventDraft("a", State.PROGRESS,
                              progress=progress_json(i, None, None, None, "{}"))
                   for i in range(5)]
        drafts += [EventDraft("b", State.STARTED), EventDraft("a", State.SUCCESS)]
        for d in drafts:
            outcome = box.publish(d, send)
            assert outcome.seq == 0 and not outcome.cancel_requested
        assert len(box) == 4
        up.set()
        assert box.drain(10)
        assert [(d.task_id, d.state, d.progress) for d in sent] == [
            ("a", State.STARTED, None),
            ("a", State.PROGRESS, progress_json(4, None, None, None, "{}")),
            ("b", State.STARTED, None), ("a", State.SUCCESS, None)]
    finally:
        up.set()
        box.stop()


def test_outbox_bound_drops_progress_first() -> None:
    """A full outbox drops queued progress-only events before any state change."""
    box = Outbox(max_events=3)

    def down(draft: EventDraft) -> PublishOutcome:
        raise redis.ConnectionError("down")

    try:
        box.publish(EventDraft("a", State.STARTED), down)
        box.publish(EventDraft("a", State.PROGRESS), down)
        box.publish(EventDraft("b", State.STARTED), down)
        box.publish(EventDraft("c", State.STARTED), down)
        assert len(box) == 3
        assert [d.state for d in box._pending] == [State.STARTED] * 3
    finally:
        box.stop()
