"""The Redis record store, against the real Redis."""

import json
import threading
import time
from typing import Any

import msgpack
import pytest
import redis
from django.test import override_settings

from progress.store import keys
from progress.store.connections import sync_client
from progress.store.records import CancelRequest, EventDraft, RecordStore
from progress.wire.encoding import dumps
from progress.wire.event_json import progress_json
from progress.wire.states import State
from tests.conftest import REDIS_URL
from tests.publishing import PublishingStore


def progress_draft(task_id: str, current: int) -> EventDraft:
    return EventDraft(task_id, State.PROGRESS,
                      progress=progress_json(current, 100, None, None, "{}"))


def test_first_event_is_seq_1_with_epoch(store: PublishingStore, task_id: str) -> None:
    """A new record starts at seq 1 with an epoch."""
    outcome = store.publish(EventDraft(task_id, State.PENDING, name="demo.count"))
    snap = store.read(task_id).snapshot
    assert outcome.seq == 1 and snap is not None
    obj = json.loads(snap.json)
    assert obj["seq"] == 1 and obj["state"] == "PENDING" and obj["epoch"] == snap.epoch
    assert obj["name"] == "demo.count" and obj["task_id"] == task_id
    assert obj["updated_at"].endswith("Z")


def test_seq_contiguous_under_concurrent_writers(store: PublishingStore, task_id: str) -> None:
    """Eight threads with their own connections publishing at once never skip or repeat a seq."""
    writers, per_writer = 8, 150
    pubsub = sync_client().pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(keys.group_channel(task_id))
    pubsub.get_message(timeout=1)  # the subscribe confirmation
    seqs: list[int] = []
    lock = threading.Lock()

    def write() -> None:
        own = PublishingStore(redis.Redis.from_url(REDIS_URL))
        for i in range(per_writer):
            outcome = own.publish(progress_draft(task_id, i))
            with lock:
                seqs.append(outcome.seq)

    threads = [threading.Thread(target=write) for _ in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(seqs) == list(range(1, writers * per_writer + 1))
    published: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while len(published) < writers * per_writer and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1)
        if message and message["type"] == "message":
            published.append(message)
    pubsub.close()
    published_seqs = [msgpack.unpackb(m["data"])["seq"] for m in published]
    assert published_seqs == list(range(1, writers * per_writer + 1))


def test_history_is_capped_and_replays(store: PublishingStore, task_id: str) -> None:
    """History keeps the last N events; a gap it covers replays, a longer one cannot."""
    with override_settings(TASKPULSE_HISTORY_LENGTH=5):
        for i in range(12):
            store.publish(progress_draft(task_id, i))
    assert sync_client().llen(keys.history_key(task_id)) == 5
    covered = store.read(task_id, since=7)
    assert covered.missed is not None
    assert [json.loads(e)["seq"] for e in covered.missed] == [8, 9, 10, 11, 12]
    assert store.read(task_id, since=6).missed is None
    assert store.read(task_id, since=12).missed == []


def test_new_epoch_when_record_is_recreated(store: PublishingStore, task_id: str) -> None:
    """A lost record comes back with a new epoch and seq 1."""
    store.publish(progress_draft(task_id, 1))
    store.publish(progress_draft(task_id, 2))
    first = store.read(task_id).snapshot
    store.delete(task_id)
    store.publish(progress_draft(task_id, 3))
    second = store.read(task_id).snapshot
    assert first is not None and second is not None
    assert second.seq == 1 and second.epoch != first.epoch


def test_final_record_expires(store: PublishingStore, task_id: str) -> None:
    """A record expires TASKPULSE_FINAL_TTL after its final state; a running one is kept."""
    with override_settings(TASKPULSE_FINAL_TTL=1):
        store.publish(progress_draft(task_id, 1))
        assert sync_client().ttl(keys.record_key(task_id)) > 60
        store.publish(EventDraft(task_id, State.SUCCESS, result_json="1"))
    assert 0 < sync_client().ttl(keys.record_key(task_id)) <= 1
    time.sleep(1.6)
    assert store.read(task_id).snapshot is None
    assert not sync_client().exists(keys.history_key(task_id))


def test_final_record_refuses_later_events(store: PublishingStore, task_id: str) -> None:
    """After SUCCESS, a late progress event is refused and nothing is published."""
    store.publish(EventDraft(task_id, State.SUCCESS, result_json='{"ok":true}'))
    late = store.publish(progress_draft(task_id, 5))
    assert not late.accepted and late.state == "SUCCESS"
    snap = store.read(task_id).snapshot
    assert snap is not None and snap.seq == 1


def test_lost_accepts_a_new_attempt(store: PublishingStore, task_id: str) -> None:
    """LOST is final for that attempt: a redelivered task's STARTED is accepted."""
    store.publish(EventDraft(task_id, State.LOST))
    again = store.publish(EventDraft(task_id, State.STARTED))
    assert again.accepted and again.seq == 2


def test_pending_only_creates(store: PublishingStore, task_id: str) -> None:
    """A re-published task (a retry) does not go back to PENDING."""
    store.publish(EventDraft(task_id, State.PENDING, name="x"))
    store.publish(EventDraft(task_id, State.RETRY))
    assert not store.publish(EventDraft(task_id, State.PENDING, name="x")).accepted


def test_lifecycle_event_keeps_progress(store: PublishingStore, task_id: str) -> None:
    """SUCCESS published without progress keeps the last reported progress."""
    store.publish(progress_draft(task_id, 40))
    store.publish(EventDraft(task_id, State.SUCCESS, result_json="null"))
    snap = store.read(task_id).snapshot
    assert snap is not None
    assert json.loads(snap.json)["progress"]["current"] == 40


def test_lifecycle_event_keeps_progress_verbatim(store: PublishingStore, task_id: str) -> None:
    """A state change keeps the last progress byte for byte, whatever its message and meta hold."""
    meta = {"list": [], "nested": {"s": '}]{[",\\', "task_id": task_id, "result": [1]}}
    progress = progress_json(3, 7, 'step ,"meta":{"x', 1.5, dumps(meta))
    fragment = f'"progress":{progress.progress},"eta":{progress.eta},"meta":{progress.meta}'
    store.publish(EventDraft(task_id, State.STARTED, name='odd ,"progress":{ name'))
    store.publish(EventDraft(task_id, State.PROGRESS, progress=progress))
    store.publish(EventDraft(task_id, State.SUCCESS, result_json='{"progress":[],"meta":{}}'))
    snap = store.read(task_id).snapshot
    assert snap is not None and f",{fragment}," in snap.json
    obj = json.loads(snap.json)
    assert obj["meta"] == meta and obj["state"] == "SUCCESS" and obj["seq"] == 3


def test_cancel_request_is_seen_by_next_publish(store: PublishingStore, task_id: str) -> None:
    """A cancel flag set on a running task is returned to its next progress call."""
    store.publish(EventDraft(task_id, State.STARTED))
    assert store.request_cancel(task_id) == CancelRequest("STARTED", first=True)
    assert store.publish(progress_draft(task_id, 1)).cancel_requested
    assert store.request_cancel(task_id) == CancelRequest("PROGRESS", first=False)
    assert store.request_cancel("no-such-task-xyz") == CancelRequest(None, first=False)


def test_cancel_of_a_queued_task_is_decided_in_the_script(store: PublishingStore,
                                                          task_id: str) -> None:
    """A PENDING task is REVOKED by the cancel itself, so a STARTED that comes a moment
    later is refused: watchers never see REVOKED and then the task running."""
    store.publish(EventDraft(task_id, State.PENDING, name="t"))
    assert store.request_cancel(task_id) == CancelRequest("REVOKED", first=True)
    assert not store.publish(EventDraft(task_id, State.STARTED, name="t")).accepted
    snap = store.read(task_id).snapshot
    assert snap is not None
    obj = json.loads(snap.json)
    assert (obj["state"], obj["seq"], obj["error"]["type"]) == ("REVOKED", 2, "TaskRevokedError")
    assert store.request_cancel(task_id) == CancelRequest("REVOKED", first=False)


def test_store_takes_one_client_per_shard() -> None:
    """A record store given another number of clients than there are shards says so."""
    client = sync_client()
    with pytest.raises(ValueError, match="one client per shard"):
        RecordStore(client, client)
