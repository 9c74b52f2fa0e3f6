"""Groups and chords watched as one id, with a real worker."""

from typing import Any

import pytest

from progress.integrations.celery.groups import start_group
from progress.tokens import issue_token
from tests.client import Ws, connect
from tests.conftest import Stack

pytestmark = pytest.mark.integration


async def watch(stack: Stack, group_id: str) -> list[dict[str, Any]]:
    async with connect(stack.ws) as conn:
        ws = Ws(conn)
        await ws.subscribe(group_id, issue_token(group_id))
        return await ws.frames_until_final(group_id, timeout=60)


def assert_contiguous(frames: list[dict[str, Any]]) -> None:
    seqs = [f["seq"] for f in frames]
    assert seqs == list(range(seqs[0], seqs[-1] + 1))


async def test_group_progress_aggregates_members(stack: Stack) -> None:
    """A group's id streams aggregated progress and ends SUCCESS when every member did."""
    from tests.tasks import slow_steps

    group_id = start_group([slow_steps.s(steps=5, delay=0.1) for _ in range(3)],
                           name="tests.three")
    frames = await watch(stack, group_id)
    assert_contiguous(frames)
    first, last = frames[0], frames[-1]
    assert first["name"] == "tests.three"
    assert last["state"] == "SUCCESS" and last["result"] == {"total": 3, "succeeded": 3}
    assert last["progress"]["current"] == 3 and last["progress"]["total"] == 3
    assert last["progress"]["percent"] == 100.0
    assert last["meta"] == {"total": 3, "done": 3, "succeeded": 3, "failed": 0, "running": 0}
    running = [f for f in frames if f["state"] == "PROGRESS"]
    assert any(0 < f["progress"]["percent"] < 100 for f in running)
    # members' own progress counts, not only finished members
    assert any(f["meta"]["done"] == 0 and f["progress"]["current"] > 0 for f in running)


async def test_group_with_a_failed_member_fails_with_summary(stack: Stack) -> None:
    """One failing member: the group ends FAILURE once all are final, naming the error."""
    from tests.tasks import fails_after, slow_steps

    group_id = start_group([slow_steps.s(steps=2, delay=0.05), fails_after.s(steps=1)])
    last = (await watch(stack, group_id))[-1]
    assert last["state"] == "FAILURE"
    assert last["error"]["type"] == "GroupFailed"
    assert last["error"]["message"] == "1 of 2 failed; first: ValueError: gave up after 1"
    assert last["meta"]["succeeded"] == 1 and last["meta"]["failed"] == 1


async def test_chord_ends_with_its_body(stack: Stack) -> None:
    """A chord's group id counts the body as a member and ends with the body's result."""
    from tests.tasks import slow_steps, total

    group_id = start_group([slow_steps.s(steps=2, delay=0.05) for _ in range(2)],
                           body=total.s())
    frames = await watch(stack, group_id)
    last = frames[-1]
    assert last["state"] == "SUCCESS" and last["result"] == {"steps": 4}
    assert last["progress"]["total"] == 3 and last["meta"]["succeeded"] == 3


async def test_chord_with_failed_header_fails_without_body(stack: Stack) -> None:
    """When a header member fails the body never runs; the group still ends (FAILURE)."""
    from tests.tasks import fails_after, slow_steps, total

    group_id = start_group([slow_steps.s(steps=1, delay=0.05), fails_after.s(steps=1)],
                           body=total.s())
    last = (await watch(stack, group_id))[-1]
    assert last["state"] == "FAILURE" and last["error"]["type"] == "GroupFailed"


def test_empty_group_is_refused() -> None:
    """start_group() needs at least one signature, and says so."""
    with pytest.raises(ValueError, match="at least one"):
        start_group([])


async def test_cancelled_queued_member_ends_the_group(stack: Stack) -> None:
    """A member cancelled before it ran still counts: the group ends instead of hanging."""
    from progress.control.cancel import cancel
    from progress.store import keys
    from progress.store.connections import sync_client
    from tests.tasks import slow_steps

    later = slow_steps.s(steps=1, delay=0.01).set(countdown=3)
    group_id = start_group([slow_steps.s(steps=2, delay=0.05), later])
    members: dict[bytes, bytes] = sync_client().hgetall(  # type: ignore[assignment]
        keys.group_members_key(group_id))
    # fields in insertion order: the members as passed to start_group
    member_ids = [k.decode()[2:] for k in members if k.startswith(b"c:")]
    queued = member_ids[1]
    cancel(queued)
    last = (await watch(stack, group_id))[-1]
    assert last["state"] == "FAILURE" and last["meta"]["failed"] == 1
    assert "TaskRevokedError" in last["error"]["message"]
