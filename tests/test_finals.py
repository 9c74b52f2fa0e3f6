"""A final lost in a fail-over with nothing after it is recorded again by the worker
process that recorded it: its heartbeat re-checks the finals it kept."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
import redis
from django.test import override_settings

from progress.publisher.finals import MAX_KEPT_FINALS, KeptFinals
from progress.store import keys
from progress.store.records import EventDraft, PublishOutcome
from progress.tokens import issue_token
from progress.wire.states import State
from tests.client import Ws, connect
from tests.faultkit import PrivateStack, private_stack, send_task
from tests.publishing import PublishingStore
from tests.test_failover_rollback import fail_over, lose_writes_after, progress_draft

STALL = 4.0  # heartbeats every second, finals kept for 8 s
BEATS = 6.0  # four heartbeat intervals and a loaded machine's slack


def record_final(store: PublishingStore, kept: KeptFinals, task_id: str) -> EventDraft:
    """Run a task to SUCCESS as a worker would, keeping its final; the final."""
    store.publish(EventDraft(task_id, State.STARTED, name="t"))
    store.publish(progress_draft(task_id, 1))
    final = EventDraft(task_id, State.SUCCESS, result_json="7")
    outcome = store.publish(final)
    assert outcome.accepted
    kept.keep(final, outcome.seq)
    return final


def state_and_seq(store: PublishingStore, task_id: str) -> tuple[str, int]:
    snap = store.read(task_id).snapshot
    assert snap is not None
    return json.loads(snap.json)["state"], snap.seq


def test_a_missing_record_gets_the_final_back(store: PublishingStore, task_id: str) -> None:
    """The record is gone (a replica that never had the task): the final is recorded again."""
    kept = KeptFinals()
    record_final(store, kept, task_id)
    store.delete(task_id)
    assert kept.recheck(store.publish) == [task_id]
    assert state_and_seq(store, task_id)[0] == "SUCCESS"


def test_a_rolled_back_record_gets_the_final_in_a_new_epoch(
        store: PublishingStore, task_id: str, redis_client: redis.Redis) -> None:
    """The record went back to before the final: the final comes back in a new epoch."""
    kept = KeptFinals()
    store.publish(EventDraft(task_id, State.STARTED, name="t"))
    replica = lose_writes_after(redis_client, task_id)
    store.publish(progress_draft(task_id, 1))
    final = EventDraft(task_id, State.SUCCESS, result_json="7")
    kept.keep(final, store.publish(final).seq)
    before = store.read(task_id).snapshot
    fail_over(redis_client, task_id, replica)
    assert kept.recheck(store.publish) == [task_id]
    after = store.read(task_id).snapshot
    assert before is not None and after is not None and after.epoch != before.epoch
    assert json.loads(after.json)["state"] == "SUCCESS"


def test_a_record_that_holds_the_final_is_not_republished(
        store: PublishingStore, task_id: str) -> None:
    """A record that still has the final gets no new seq; a lost one beside it is repaired."""
    kept = KeptFinals()
    record_final(store, kept, task_id)
    held = state_and_seq(store, task_id)
    lost_id = f"{task_id}-lost"
    record_final(store, kept, lost_id)
    store.delete(lost_id)
    try:
        assert kept.recheck(store.publish) == [lost_id]
        assert state_and_seq(store, task_id) == held
        assert len(kept) == 2  # both still inside their window
    finally:
        store.delete(lost_id)


def test_a_record_that_moved_past_the_final_is_not_touched(
        store: PublishingStore, task_id: str) -> None:
    """The task ran again under the same id (a new attempt): the old final is forgotten."""
    kept = KeptFinals()
    record_final(store, kept, task_id)
    store.delete(task_id)  # the record expired, say, and the task was run again
    for state in (State.STARTED, State.RETRY, State.STARTED):
        store.publish(EventDraft(task_id, state, name="t"))
    again = state_and_seq(store, task_id)
    assert kept.recheck(store.publish) == []
    assert state_and_seq(store, task_id) == again == ("STARTED", 3)
    assert len(kept) == 0


def test_finals_past_their_window_are_forgotten_once_held(
        store: PublishingStore, task_id: str) -> None:
    """Past two stall timeouts a held final is no longer re-checked."""
    kept = KeptFinals()
    with override_settings(TASKPULSE_STALL_TIMEOUT=0):
        record_final(store, kept, task_id)
        assert kept.recheck(store.publish) == []
    assert len(kept) == 0


def test_the_keeper_is_bounded(task_id: str) -> None:
    """Past MAX_KEPT_FINALS the oldest finals are no longer kept or re-checked."""
    kept = KeptFinals()
    ids = [f"{task_id}-{i}" for i in range(MAX_KEPT_FINALS + 5)]
    for i, tid in enumerate(ids):
        kept.keep(EventDraft(tid, State.SUCCESS), i + 2)
    republished: list[str] = []

    def republish(draft: EventDraft) -> PublishOutcome:
        republished.append(draft.task_id)  # no record exists: each kept one is "lost"
        return PublishOutcome(1, False, draft.state.value)

    assert kept.recheck(republish) == republished == ids[5:]


def test_the_publisher_keeps_its_finals(store: PublishingStore, task_id: str) -> None:
    """A final the publisher records is kept, with its seq, and its heartbeat re-checks it."""
    from progress.publisher import forget, publish
    from progress.publisher.heartbeat import heartbeat

    publish(EventDraft(task_id, State.STARTED, name="t"))
    final = EventDraft(task_id, State.SUCCESS, result_json="1")
    seq = publish(final).seq
    forget(task_id)
    mine = [k for k in heartbeat().finals.kept() if k.draft.task_id == task_id]
    assert [(k.draft.event_id, k.seq) for k in mine] == [(final.event_id, seq)]
    store.delete(task_id)
    heartbeat().beat()
    assert state_and_seq(store, task_id)[0] == "SUCCESS"
    heartbeat().finals.clear()  # what this test kept is not the session's to repair


@pytest.fixture(scope="module")
def short_stack(redis_client: redis.Redis) -> Iterator[PrivateStack]:
    """A stack whose workers beat every second (a short stall timeout)."""
    with private_stack({"TASKPULSE_STALL_TIMEOUT": str(STALL)}) as running:
        yield running


def arm_as_running(client: redis.Redis, task_id: str) -> None:
    """What the promoted replica has: the task running, its deadline one stall timeout
    off (the sweeper's grace after a fail-over)."""
    seconds, micros = client.time()
    deadline = seconds + micros / 1e6 + STALL
    client.hset(keys.record_key(task_id), "deadline", repr(deadline))
    client.zadd(keys.running_index_key(), {task_id: deadline})


@pytest.mark.integration
async def test_a_worker_records_its_lost_final_again(
        short_stack: PrivateStack, redis_client: redis.Redis) -> None:
    """A real worker's SUCCESS lost in a fail-over reaches a watcher that missed it as a
    reset snapshot (new epoch) within a few heartbeats, and the task never ends LOST."""
    task_id = send_task(short_stack, "tests.blocks", seconds=1)
    token = issue_token(task_id)
    with override_settings(TASKPULSE_KEY_PREFIX=short_stack.prefix):
        async with connect(short_stack.ws()) as conn:
            ws = Ws(conn)
            await ws.subscribe(task_id, token)
            progress = await ws.until_progress(30)
            replica = lose_writes_after(redis_client, task_id)
            success = (await ws.frames_until_final(task_id, timeout=30))[-1]
        assert success["state"] == "SUCCESS"  # acknowledged by the old master
        fail_over(redis_client, task_id, replica)
        arm_as_running(redis_client, task_id)
        # A watcher whose connection went with the old master resumes where it was.
        async with connect(short_stack.ws()) as conn:
            ws = Ws(conn)
            await ws.subscribe(task_id, token, since=progress["seq"], epoch=progress["epoch"])
            frames = await ws.frames_until_final(task_id, timeout=BEATS)
        await asyncio.sleep(STALL + 1)  # past the restored deadline: LOST, if it could be
        history = redis_client.lrange(keys.history_key(task_id), 0, -1)
        final = store_state(redis_client, task_id)
    again = frames[-1]
    assert again["type"] == "snapshot" and again.get("reset") is True, frames
    assert again["state"] == "SUCCESS" and again["result"] == "done"
    assert again["epoch"] not in (progress["epoch"], success["epoch"])
    assert final == "SUCCESS"
    assert "LOST" not in [json.loads(e)["state"] for e in history]


def store_state(client: redis.Redis, task_id: str) -> str:
    state = client.hget(keys.record_key(task_id), "state")
    assert isinstance(state, bytes)
    return state.decode()
