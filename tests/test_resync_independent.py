"""After a channel-layer reconnect each subscription catches up on its own: one
whose store read fails is retried, then reported `unavailable`, and does not hold
back the others; its next live event resyncs it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from consumers import progress as consumer_module
from consumers.progress import ProgressConsumer
from progress.publisher import publish
from progress.store import process_store
from progress.store.records import EventDraft
from progress.wire.delivery import Subscription
from progress.wire.event_json import progress_json
from progress.wire.states import State
from tests.publishing import PublishingStore


class Collected:
    """Stands in for the consumer's send queue: the frames, in order."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    async def put(self, frame: str, task_id: str | None = None,
                  progress_only: bool = False) -> None:
        self.frames.append(json.loads(frame))


class FailingFor:
    """The real async store, except that reads of one task fail (a shard that is down)."""

    def __init__(self, real: Any, failing: str) -> None:
        self.real, self.failing, self.calls = real, failing, 0

    async def read(self, task_id: str, since: int | None = None) -> Any:
        if task_id == self.failing:
            self.calls += 1
            raise ConnectionError("shard unreachable")
        return await self.real.read(task_id, since)


@pytest.fixture
def two_tasks(store: PublishingStore) -> Any:
    ids = ("t-resync-broken", "t-resync-fine")
    for task_id in ids:
        store.delete(task_id)
        publish(EventDraft(task_id, State.STARTED, name="demo"))
        for i in (1, 2):
            publish(EventDraft(task_id, State.PROGRESS,
                               progress=progress_json(i, None, None, None, "{}")))
    yield ids
    for task_id in ids:
        store.delete(task_id)


async def test_one_failing_resync_does_not_skip_the_others(
        two_tasks: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The broken task is retried and reported; the fine one still gets what it missed."""
    broken, fine = two_tasks
    real = process_store.async_store()
    failing = FailingFor(real, broken)
    monkeypatch.setattr(consumer_module, "async_store", lambda: failing)
    monkeypatch.setattr(consumer_module, "RESYNC_RETRY_PAUSES", (0.01, 0.01))
    consumer = ProgressConsumer()
    outbox = Collected()
    consumer.outbox = outbox  # type: ignore[assignment]
    fine_now, broken_now = (await real.read(fine)).snapshot, (await real.read(broken)).snapshot
    assert fine_now is not None and broken_now is not None
    epoch, broken_epoch = fine_now.epoch, broken_now.epoch
    # Both saw seq 1 (STARTED) before the layer lost Redis; seq 2 and 3 were missed.
    consumer.subscriptions = {broken: Subscription(broken, broken_epoch, 1, "STARTED"),
                              fine: Subscription(fine, epoch, 1, "STARTED")}

    await consumer.layer_reconnected({"type": "layer.reconnected"})

    assert failing.calls == 3  # tried, then retried twice
    errors = [f for f in outbox.frames if f["type"] == "error"]
    assert [(e["code"], e["task_id"]) for e in errors] == [("unavailable", broken)]
    missed = [f["seq"] for f in outbox.frames if f.get("task_id") == fine]
    assert missed == [2, 3]
    assert consumer.subscriptions[broken].stale

    # The store answers again: the broken task's next live event resyncs it.
    monkeypatch.setattr(consumer_module, "async_store", lambda: real)
    outbox.frames.clear()
    await consumer.task_event({"type": "task.event", "task_id": broken, "epoch": broken_epoch,
                               "seq": 4, "state": "PROGRESS", "final": False, "data": "{}"})
    assert [f["seq"] for f in outbox.frames if f.get("task_id") == broken] == [2, 3]
    assert not consumer.subscriptions[broken].stale
