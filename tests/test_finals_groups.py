"""A member's final lost in a fail-over is counted in its group again when the worker
records it again (GUARANTEES rule 13), once: a group that counted it is left alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.test import override_settings

from progress.integrations.celery.groups import start_group
from progress.publisher import forget, note_group, publish
from progress.publisher.heartbeat import heartbeat
from progress.store import keys
from progress.store.groups import create_members, member_ids
from progress.store.records import EventDraft
from progress.tokens import issue_token
from progress.wire.states import State
from tests.client import Ws, connect
from tests.faultkit import PrivateStack
from tests.publishing import PublishingStore
from tests.test_finals import BEATS, arm_as_running, short_stack

# Re-exported: test_finals.py's fixture, a stack whose workers beat every second.
__all__ = ["short_stack"]

Dumps = dict[str, bytes]


@pytest.fixture
def group(store: PublishingStore, task_id: str, redis_client: redis.Redis) -> Iterator[str]:
    """A group of two members (`<group>-a`, `<group>-b`), PENDING, as start_group writes it."""
    group_id = f"{task_id}-g"
    members = [f"{group_id}-a", f"{group_id}-b"]
    create_members(group_id, members)
    store.publish(EventDraft(group_id, State.PENDING, name="g"))
    yield group_id
    heartbeat().finals.clear()  # what this test kept is not the session's to repair
    for tid in (group_id, *members):
        forget(tid)
        store.delete(tid)
        redis_client.zrem(keys.running_index_key(), tid)
    redis_client.delete(keys.group_members_key(group_id))


def run_member(task_id: str, group_id: str, state: State = State.SUCCESS) -> None:
    """What a worker publishes for a member: STARTED, then its final."""
    note_group(task_id, group_id)
    publish(EventDraft(task_id, State.STARTED, name="m"))
    publish(EventDraft(task_id, state, result_json="1"))
    forget(task_id)


def start_member(task_id: str, group_id: str) -> None:
    note_group(task_id, group_id)
    publish(EventDraft(task_id, State.STARTED, name="m"))


def end_member(task_id: str) -> None:
    publish(EventDraft(task_id, State.SUCCESS, result_json="1"))
    forget(task_id)


def group_keys(group_id: str) -> list[str]:
    return [keys.record_key(group_id), keys.history_key(group_id),
            keys.group_members_key(group_id)]


def member_keys(task_id: str) -> list[str]:
    return [keys.record_key(task_id), keys.history_key(task_id)]


def dump(client: redis.Redis, names: list[str]) -> Dumps:
    """What a replica that stops replicating now will hold of these keys."""
    dumps: Dumps = {}
    for name in names:
        value = client.dump(name)
        assert isinstance(value, bytes), name
        dumps[name] = value
    return dumps


def fail_over(client: redis.Redis, dumps: Dumps) -> None:
    """The replica is promoted: these keys are back to what it had."""
    for name, value in dumps.items():
        client.restore(name, 0, value, replace=True)


def group_event(store: PublishingStore, group_id: str) -> tuple[dict[str, Any], int]:
    snap = store.read(group_id).snapshot
    assert snap is not None
    return json.loads(snap.json), snap.seq


def test_a_rolled_back_group_counts_the_repaired_final(
        store: PublishingStore, group: str, redis_client: redis.Redis) -> None:
    """The member's SUCCESS and the group's SUCCESS are both lost: the worker's repair
    records the member's final again and the group ends SUCCESS, in a new epoch."""
    first, last = f"{group}-a", f"{group}-b"
    run_member(first, group)
    start_member(last, group)
    replica = dump(redis_client, member_keys(last) + group_keys(group))
    end_member(last)
    ended, _ = group_event(store, group)
    assert ended["state"] == "SUCCESS"
    fail_over(redis_client, replica)
    rolled_back, _ = group_event(store, group)
    assert rolled_back["state"] == "PROGRESS" and rolled_back["meta"]["done"] == 1

    heartbeat().beat()

    member, _ = group_event(store, last)
    repaired, _ = group_event(store, group)
    assert member["state"] == "SUCCESS"
    assert repaired["state"] == "SUCCESS" and repaired["final"] is True
    assert repaired["result"] == {"total": 2, "succeeded": 2}
    assert repaired["meta"] == {"total": 2, "done": 2, "succeeded": 2, "failed": 0,
                                "running": 0}
    assert repaired["epoch"] != rolled_back["epoch"]  # its watchers get a reset snapshot


def test_a_group_that_lost_only_its_count_is_repaired(
        store: PublishingStore, group: str, redis_client: redis.Redis) -> None:
    """The member's record kept its FAILURE but the group's update was lost (its own
    script, a moment later): the group ends FAILURE with the member's error."""
    first, last = f"{group}-a", f"{group}-b"
    run_member(first, group)
    start_member(last, group)
    replica = dump(redis_client, group_keys(group))
    publish(EventDraft(last, State.FAILURE, error={"type": "ValueError", "message": "no"}))
    forget(last)
    fail_over(redis_client, replica)

    heartbeat().beat()

    repaired, _ = group_event(store, group)
    assert repaired["state"] == "FAILURE"
    assert repaired["error"] == {"type": "GroupFailed",
                                 "message": "1 of 2 failed; first: ValueError: no"}


def test_a_group_that_counted_the_final_is_not_counted_twice(
        store: PublishingStore, group: str, redis_client: redis.Redis) -> None:
    """Only the member's record lost its final: it is recorded again, and the group,
    which counted it, gets no new event."""
    first, last = f"{group}-a", f"{group}-b"
    start_member(first, group)
    replica = dump(redis_client, member_keys(first))
    end_member(first)
    counted = group_event(store, group)
    assert counted[0]["meta"]["done"] == 1
    fail_over(redis_client, replica)

    heartbeat().beat()
    heartbeat().beat()

    member, _ = group_event(store, first)
    assert member["state"] == "SUCCESS"
    assert group_event(store, group) == counted
    run_member(last, group)  # the other member's final still ends the group, 2 of 2
    ended, _ = group_event(store, group)
    assert ended["state"] == "SUCCESS" and ended["meta"]["done"] == 2


@pytest.mark.integration
async def test_a_worker_counts_its_lost_final_in_the_group_again(
        short_stack: PrivateStack, redis_client: redis.Redis) -> None:
    """A real worker's member SUCCESS and the group's SUCCESS, both lost in a fail-over:
    the group's watcher gets the group's SUCCESS again as a reset snapshot within a few
    heartbeats, instead of a group left PROGRESS until its TTL."""
    from tests.tasks import blocks

    with override_settings(TASKPULSE_KEY_PREFIX=short_stack.prefix):
        group_id = start_group([blocks.s(seconds=1).set(queue=short_stack.prefix)])
        [member] = member_ids(group_id)
        token = issue_token(group_id)
        async with connect(short_stack.ws()) as conn:
            ws = Ws(conn)
            await ws.subscribe(group_id, token)
            progress = await ws.until_progress(30)
            replica = dump(redis_client, member_keys(member) + group_keys(group_id))
            success = (await ws.frames_until_final(group_id, timeout=30))[-1]
        assert success["state"] == "SUCCESS"  # acknowledged by the old master
        fail_over(redis_client, replica)
        arm_as_running(redis_client, member)
        async with connect(short_stack.ws()) as conn:
            ws = Ws(conn)
            await ws.subscribe(group_id, token, since=progress["seq"], epoch=progress["epoch"])
            frames = await ws.frames_until_final(group_id, timeout=BEATS)
    again = frames[-1]
    assert again["type"] == "snapshot" and again.get("reset") is True, frames
    assert again["state"] == "SUCCESS" and again["result"] == {"total": 1, "succeeded": 1}
    assert again["epoch"] not in (progress["epoch"], success["epoch"])
