"""The event object is built in one place (progress/wire/event_json.py) and the record
script takes its event as one named table: against the real Redis."""

from __future__ import annotations

import json

import msgpack
import redis

from progress.store import keys
from progress.store.records import EventDraft, event_args
from progress.wire.encoding import dumps
from progress.wire.event_json import (
    EVENT_MEMBERS,
    encode_event,
    progress_info,
    progress_json,
)
from progress.wire.objects import unknown_object
from progress.wire.server_frames import unknown_snapshot
from progress.wire.states import State
from progress.wire.types import TaskObject
from tests.publishing import PublishingStore


def test_the_script_writes_events_as_encode_event_does(store: PublishingStore,
                                                       task_id: str) -> None:
    """A recorded event's JSON is byte for byte what encode_event() makes of its object:
    one builder, whichever side writes it."""
    store.publish(EventDraft(task_id, State.STARTED, name="export"))
    meta = {"rows": [], "quote": 'a "b" \\ c', "ü": 1.5}
    store.publish(EventDraft(task_id, State.PROGRESS,
                             progress=progress_json(2, 8, "row 2", 3.25, dumps(meta))))
    snap = store.read(task_id).snapshot
    assert snap is not None
    obj: TaskObject = json.loads(snap.json)
    assert snap.json == encode_event(obj)
    assert [name for name, _ in EVENT_MEMBERS] == list(obj)
    assert obj["meta"] == meta and obj["progress"]["percent"] == 25.0


def test_the_script_takes_one_named_table(task_id: str) -> None:
    """The record script's one argument is a msgpack map of named members: no
    positional ARGV whose offsets move with a result-backend key."""
    args = event_args(EventDraft(task_id, State.STARTED, name="t", stall_timeout=30.0))
    event = msgpack.unpackb(args.argument)
    assert event["task_id"] == task_id and event["state"] == "STARTED"
    assert event["final"] is False and event["name"] == '"t"' and event["stall"] == 30.0
    assert "progress" not in event  # a lifecycle event keeps the record's progress


def test_a_lifecycle_event_keeps_the_progress_of_a_record_from_the_last_release(
        store: PublishingStore, task_id: str, redis_client: redis.Redis) -> None:
    """A record the previous record script wrote (no progress members kept apart) keeps
    its progress through a state change after the upgrade."""
    old_json = ('{"epoch":"0123456789ab","seq":2,"name":"\\"t\\"","state":"PROGRESS",'
                '"final":false,"progress":{"current":5,"total":10,"percent":50.0,'
                '"message":"half"},"eta":2.5,"meta":{"k":"v"},"task_id":'
                + dumps(task_id) + ',"result":null,"error":null,'
                '"updated_at":"2026-12-07T00:00:00.000000Z"}')
    redis_client.hset(keys.record_key(task_id), mapping={
        "state": "PROGRESS", "final": "0", "epoch": "0123456789ab", "name": '"t"',
        "seq": "2", "json": old_json})
    outcome = store.publish(EventDraft(task_id, State.SUCCESS, result_json="7"))
    snap = store.read(task_id).snapshot
    assert outcome.seq == 3 and snap is not None
    obj = json.loads(snap.json)
    assert obj["state"] == "SUCCESS" and obj["result"] == 7
    assert obj["progress"] == {"current": 5, "total": 10, "percent": 50.0, "message": "half"}
    assert obj["eta"] == 2.5 and obj["meta"] == {"k": "v"}


def test_progress_info_is_the_flat_progress_object() -> None:
    """The mirror's value (Celery's AsyncResult.info) holds the event's progress members."""
    info = json.loads(progress_info(progress_json(1, 4, None, None, '{"a":[]}')))
    assert info == {"current": 1, "total": 4, "percent": 25.0, "message": None,
                    "eta": None, "meta": {"a": []}}


def test_the_unknown_snapshot_is_built_by_the_same_encoder() -> None:
    """The UNKNOWN snapshot carries the same object as encode_event() writes."""
    frame = json.loads(unknown_snapshot("t-none", reset=True))
    assert frame.pop("type") == "snapshot" and frame.pop("reset") is True
    assert frame == unknown_object("t-none")


def test_progress_a_writer_of_the_last_release_recorded_is_kept(
        store: PublishingStore, task_id: str, redis_client: redis.Redis) -> None:
    """During a rolling deploy a worker of the previous release records progress on a
    record this release wrote (its script leaves the progress members alone): a state
    change after it keeps that progress, not the older one kept apart."""
    store.publish(EventDraft(task_id, State.STARTED, name="t"))
    store.publish(EventDraft(task_id, State.PROGRESS,
                             progress=progress_json(1, 10, "old", None, "{}")))
    snap = store.read(task_id).snapshot
    assert snap is not None
    newer = json.loads(snap.json)
    newer.update(seq=3, progress={"current": 9, "total": 10, "percent": 90.0,
                                  "message": "newer"})
    redis_client.hset(keys.record_key(task_id),  # as the previous script writes it
                      mapping={"seq": "3", "json": encode_event(newer), "eid": ""})
    store.publish(EventDraft(task_id, State.SUCCESS))
    done = store.read(task_id).snapshot
    assert done is not None
    obj = json.loads(done.json)
    assert obj["seq"] == 4 and obj["progress"]["message"] == "newer"
