"""A fail-over that loses writes keeps the epoch while the record's seq goes back.
The writer knows the last seq it recorded; the record script sees it is behind,
takes a new epoch, and every watcher gets a reset snapshot instead of skipping
events numbered like ones it already saw (or waiting for them forever)."""

from __future__ import annotations

import json

import pytest
import redis

from progress.store import keys
from progress.store.records import EventDraft
from progress.tokens import issue_token
from progress.wire.event_json import progress_json
from progress.wire.states import State
from tests.client import Ws, connect
from tests.conftest import Stack
from tests.publishing import PublishingStore

pytestmark = pytest.mark.integration


def progress_draft(task_id: str, i: int, known: int | None = None) -> EventDraft:
    return EventDraft(task_id, State.PROGRESS,
                      progress=progress_json(i, 10, f"step {i}", None, "{}"),
                      known_seq=known)


def lose_writes_after(client: redis.Redis, task_id: str) -> tuple[bytes, bytes]:
    """What a replica that stopped replicating now holds: the record and history as dumps."""
    record, history = client.dump(keys.record_key(task_id)), client.dump(keys.history_key(task_id))
    assert isinstance(record, bytes) and isinstance(history, bytes)
    return record, history


def fail_over(client: redis.Redis, task_id: str, replica: tuple[bytes, bytes]) -> None:
    """The replica is promoted: the record and history are what it had."""
    client.restore(keys.record_key(task_id), 0, replica[0], replace=True)
    client.restore(keys.history_key(task_id), 0, replica[1], replace=True)


async def test_a_watcher_past_the_lost_writes_gets_a_reset(
        stack: Stack, store: PublishingStore, task_id: str, redis_client: redis.Redis) -> None:
    """The watcher saw seq 5; the new master has seq 3; the task's next event (SUCCESS)
    reaches the watcher as a reset snapshot with a new epoch, not as a dropped seq 4."""
    store.publish(EventDraft(task_id, State.STARTED, name="t"))
    for i in (1, 2):
        store.publish(progress_draft(task_id, i))
    replica = lose_writes_after(redis_client, task_id)  # seq 3
    for i in (3, 4):
        store.publish(progress_draft(task_id, i))  # seq 4, 5: lost in the fail-over
    old = store.read(task_id).snapshot
    assert old is not None and old.seq == 5
    async with connect(stack.ws) as conn:
        ws = Ws(conn)
        await ws.subscribe(task_id, issue_token(task_id))
        assert (await ws.recv())["seq"] == 5
        fail_over(redis_client, task_id, replica)
        outcome = store.publish(EventDraft(task_id, State.SUCCESS, result_json="7", known_seq=5))
        assert outcome.accepted
        frame = await ws.recv()
    assert frame["type"] == "snapshot" and frame.get("reset") is True
    assert frame["state"] == "SUCCESS" and frame["result"] == 7
    assert frame["epoch"] != old.epoch


def test_a_writer_that_is_not_behind_keeps_the_epoch(store: PublishingStore, task_id: str) -> None:
    """No fail-over: a writer's known seq equals the record's, and nothing resets."""
    first = store.publish(EventDraft(task_id, State.STARTED, name="t"))
    store.publish(progress_draft(task_id, 1, known=first.seq))
    snap = store.read(task_id).snapshot
    assert snap is not None
    epochs = {json.loads(e)["epoch"] for e in store.read(task_id, 0).missed or []}
    assert epochs == {snap.epoch}


def test_the_publisher_remembers_what_it_recorded(
        store: PublishingStore, task_id: str, redis_client: redis.Redis) -> None:
    """A worker's publisher passes the last seq it recorded for a task it runs, so its
    next event after a lossy fail-over opens a new epoch without the task doing anything."""
    from progress.publisher import forget, publish

    publish(EventDraft(task_id, State.STARTED, name="t"))
    publish(progress_draft(task_id, 1))
    replica = lose_writes_after(redis_client, task_id)  # seq 2
    publish(progress_draft(task_id, 2))
    before = store.read(task_id).snapshot
    assert before is not None and before.seq == 3
    fail_over(redis_client, task_id, replica)
    assert publish(EventDraft(task_id, State.SUCCESS, result_json="1")).accepted
    forget(task_id)
    after = store.read(task_id).snapshot
    assert after is not None and after.epoch != before.epoch
    assert json.loads(after.json)["state"] == "SUCCESS"
