"""The task-author API end to end: a real worker, the real Redis, a WebSocket client."""

import json
import uuid
from typing import Any

import pytest
import redis

from progress.publisher import track, with_progress
from progress.tokens import issue_token
from tests.client import Ws, connect
from tests.conftest import REDIS_URL, Stack

pytestmark = pytest.mark.integration


async def watch(stack: Stack, task_id: str, timeout: float = 60.0) -> list[dict[str, Any]]:
    async with connect(stack.ws) as conn:
        ws = Ws(conn)
        await ws.subscribe(task_id, issue_token(task_id))
        return await ws.frames_until_final(task_id, timeout)


def progress_frames(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in frames if f["state"] == "PROGRESS"]


async def test_hot_loop_is_coalesced_and_last_values_arrive(stack: Stack) -> None:
    """200,000 update() calls become a handful of events; the last one carries call 200,000."""
    from tests.tasks import hot_loop

    task_id = str(uuid.uuid4())
    hot_loop.apply_async(kwargs={"calls": 200_000}, task_id=task_id)
    frames = await watch(stack, task_id)
    assert frames[-1]["state"] == "SUCCESS" and frames[-1]["result"] == {"calls": 200_000}
    assert frames[-1]["progress"]["current"] == 200_000
    assert frames[-1]["progress"]["message"] == "call 200000"
    assert len(frames) < 200  # throttled to about one event per 0.1 s
    seqs = [f["seq"] for f in frames]
    assert seqs == list(range(seqs[0], seqs[-1] + 1))


async def test_threads_report_through_a_helper(stack: Stack) -> None:
    """Threads inside a task advancing one reporter by id lose no increment."""
    from tests.tasks import threaded

    task_id = str(uuid.uuid4())
    threaded.apply_async(kwargs={"threads": 4, "per_thread": 5000}, task_id=task_id)
    frames = await watch(stack, task_id)
    assert frames[-1]["state"] == "SUCCESS"
    assert frames[-1]["progress"]["current"] == 20_000
    assert frames[-1]["progress"]["percent"] == 100.0


async def test_failure_keeps_last_progress(stack: Stack) -> None:
    """A task failing right after a held-back update still shows that update."""
    from tests.tasks import fails_after

    task_id = str(uuid.uuid4())
    fails_after.apply_async(kwargs={"steps": 3, "delay": 0.01}, task_id=task_id)
    frames = await watch(stack, task_id)
    assert frames[-1]["state"] == "FAILURE"
    assert frames[-1]["progress"]["current"] == 3 and frames[-1]["progress"]["total"] == 4


async def test_eta_is_sent_while_running(stack: Stack) -> None:
    """A steadily progressing task's events carry a positive ETA, and 0 at the end."""
    from tests.tasks import slow_steps

    task_id = str(uuid.uuid4())
    slow_steps.apply_async(kwargs={"steps": 12, "delay": 0.12}, task_id=task_id)
    frames = progress_frames(await watch(stack, task_id))
    etas = [f["eta"] for f in frames]
    assert any(isinstance(e, float) and e > 0 for e in etas[:-1]), etas
    assert etas[-1] == 0.0


def test_track_by_id_returns_the_same_reporter() -> None:
    """A helper that only knows the task id continues the task's reporter."""
    first = track("unit-same-reporter")
    assert track("unit-same-reporter") is first
    from progress.publisher import forget

    forget("unit-same-reporter")
    assert track("unit-same-reporter") is not first
    forget("unit-same-reporter")


def test_with_progress_hides_the_keyword_from_callers() -> None:
    """@with_progress functions are called without `progress`; Celery sees that signature."""
    import inspect

    @with_progress
    def export(self: Any, rows: int, *, progress: Any) -> int:
        return rows

    assert list(inspect.signature(export).parameters) == ["self", "rows"]
    from celery.utils.functional import head_from_fun

    celery_check = head_from_fun(export, bound=True)  # what apply_async() checks calls with
    celery_check(3)
    with pytest.raises(TypeError):
        celery_check(3, progress=None)
    with pytest.raises(TypeError, match="progress"):
        with_progress(lambda self: None)


@pytest.mark.parametrize("hiredis", [True, False])
def test_script_runner_recovers(redis_client: Any, hiredis: bool,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The publisher's own connection loads its script on NOSCRIPT and survives a dropped socket."""
    from progress.store.script_runner import ScriptRunner
    from progress.store.tuned import script_socket

    monkeypatch.setattr(script_socket, "HAVE_HIREDIS", hiredis and script_socket.HAVE_HIREDIS)

    name = f"tp-test-{uuid.uuid4().hex[:8]}"  # a script no server has seen, a unique client
    runner = ScriptRunner(REDIS_URL, f"-- {name}\nreturn {{KEYS[1], ARGV[1]}}",
                          client_name=name)
    try:
        assert runner(["k"], ["a"]) == [b"k", b"a"]
        [mine] = [c for c in redis_client.client_list() if c.get("name") == name]
        redis_client.client_kill_filter(_id=mine["id"])
        assert runner(["k"], ["b"]) == [b"k", b"b"]
    finally:
        runner.close()


def test_script_runner_sends_leading_arguments_first(redis_client: Any) -> None:
    """`leading` arguments, packed once, reach the script before the per-call ones."""
    from progress.store.script_runner import ScriptRunner

    runner = ScriptRunner(REDIS_URL, "return {KEYS[1], ARGV[1], ARGV[2], ARGV[3]}")
    try:
        assert runner(["k"], ["x"], leading=["a", 1]) == [b"k", b"a", b"1", b"x"]
        assert runner(["k"], ["y"], leading=["a", 1]) == [b"k", b"a", b"1", b"y"]
        assert runner(["j"], ["z", "w"], leading=["b"]) == [b"j", b"b", b"z", b"w"]
    finally:
        runner.close()


@pytest.mark.parametrize("hiredis", [True, False])
def test_script_runner_many_pipelines_calls_in_order(hiredis: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Several calls in one round trip: every reply, in call order, also on a
    connection whose server has not seen the script yet."""
    from progress.store.script_runner import ScriptRunner
    from progress.store.tuned import script_socket

    monkeypatch.setattr(script_socket, "HAVE_HIREDIS", hiredis and script_socket.HAVE_HIREDIS)
    name = f"tp-test-{uuid.uuid4().hex[:8]}"
    runner = ScriptRunner(REDIS_URL, f"-- {name}\nreturn {{KEYS[1], ARGV[1]}}")
    try:
        calls = [([f"k{i}"], [str(i)], ()) for i in range(50)]
        assert runner.many(calls) == [[f"k{i}".encode(), str(i).encode()] for i in range(50)]
        assert runner.many([]) == []
    finally:
        runner.close()


def test_publish_many_records_each_event_in_order(store: Any, task_id: str) -> None:
    """One pipelined round trip records the events of several tasks as separate
    publish() calls would: per task in order, numbered from 1."""
    from progress.publisher import publish_many
    from progress.store.records import EventDraft
    from progress.wire.event_json import progress_json
    from progress.wire.states import State

    def step(task: str, current: int) -> EventDraft:
        return EventDraft(task, State.PROGRESS,
                          progress=progress_json(current, 3, None, None, "{}"))

    other = f"{task_id}-b"
    drafts = [EventDraft(task_id, State.PENDING), EventDraft(other, State.PENDING)]
    drafts += [step(t, i) for i in range(1, 4) for t in (task_id, other)]
    drafts.append(EventDraft(other, State.SUCCESS, result_json='{"ok": true}'))
    try:
        assert [o.seq for o in publish_many(drafts)] == [1, 1, 2, 2, 3, 3, 4, 4, 5]
        history = [json.loads(e) for e in store.read(task_id, since=0).missed or []]
        assert [(e["seq"], e["progress"]["current"]) for e in history[1:]] == [
            (2, 1), (3, 2), (4, 3)]
        final = store.read(other).snapshot
        assert final is not None and json.loads(final.json)["result"] == {"ok": True}
    finally:
        store.delete(other)


def test_a_replica_refusing_writes_buffers_events_until_it_is_master(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that answers READONLY (a demoted master) is treated as unreachable: events
    wait in the outbox, in order, and are recorded once the server is a master again."""
    import redis
    from django.test import override_settings

    from progress import publisher
    from progress.store.outbox import outboxes
    from progress.store.records import EventDraft
    from progress.wire.states import State
    from tests import processes

    monkeypatch.setattr("progress.store.outbox.RETRY_MIN", 0.05)
    master_port, replica_port = processes.free_port(), processes.free_port()
    master = processes.start_redis(master_port, str(tmp_path), persistent=False)
    replica = processes.start_replica(replica_port, str(tmp_path), master_port)
    url = f"redis://127.0.0.1:{replica_port}/0"
    layer = {"BACKEND": "consumers.layer.ResyncingPubSubChannelLayer",
             "CONFIG": {"hosts": [url], "prefix": "tp"}}
    try:
        with override_settings(TASKPULSE_SHARDS=[url], CHANNEL_LAYERS={"taskpulse": layer}):
            task_id = f"readonly-{uuid.uuid4()}"
            first = publisher.publish(EventDraft(task_id, State.STARTED, name="t"))
            second = publisher.publish(EventDraft(task_id, State.SUCCESS))
            assert not first.accepted and not second.accepted  # buffered, not numbered
            assert len(outboxes()[0]) == 2
            server = redis.Redis(port=replica_port)
            server.replicaof("NO", "ONE")
            assert outboxes()[0].drain(10)
            snapshot = publisher.store().read(task_id)
            assert snapshot.snapshot is not None and snapshot.snapshot.seq == 2
            assert '"state":"SUCCESS"' in snapshot.snapshot.json
            server.close()
    finally:
        replica.stop()
        master.stop()


def test_a_runaway_message_is_capped(store: Any, task_id: str) -> None:
    """A progress message longer than TASKPULSE_MESSAGE_MAX_CHARS is cut (it is kept in
    every history entry), and lone surrogates in it are made safe, not fatal."""
    from django.test import override_settings

    from progress.publisher import track

    with override_settings(TASKPULSE_MESSAGE_MAX_CHARS=50, TASKPULSE_MIN_INTERVAL=0):
        track(task_id).update(1, total=2, message="x" * 10_000 + "\ud800")
        track(task_id).update(2, total=2, message="bad \ud800 text")
    found = store.read(task_id, 0)
    assert found.missed is not None
    first, second = (json.loads(event)["progress"]["message"] for event in found.missed)
    assert len(first) == 50 and first.endswith("\u2026")
    assert second == "bad \ufffd text"


@pytest.mark.parametrize("hiredis", [True, False])
def test_an_error_inside_a_pipeline_leaves_no_stale_reply(
        hiredis: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A call that fails in the middle of many(): the error is raised after every reply
    was read, so the next call gets its own answer, not a stale one."""
    from progress.store.script_runner import ScriptRunner
    from progress.store.tuned import script_socket

    monkeypatch.setattr(script_socket, "HAVE_HIREDIS", hiredis and script_socket.HAVE_HIREDIS)
    runner = ScriptRunner(REDIS_URL, "if ARGV[1] == 'bad' then error('refused') end "
                                     "return ARGV[1]")
    try:
        calls = [(["k"], [value], ()) for value in ("a", "bad", "c", "d")]
        with pytest.raises(redis.ResponseError, match="refused"):
            runner.many(calls)
        assert runner(["k"], ["after"]) == b"after"
    finally:
        runner.close()


def test_a_retried_event_is_recorded_once(store: Any, task_id: str) -> None:
    """The same event sent twice (a retry after a timeout whose first try ran) is
    answered with the first outcome and recorded once: no duplicate in the history."""
    from progress.store.records import EventDraft
    from progress.wire.states import State

    started = EventDraft(task_id, State.STARTED, name="t")
    first = store.publish(started)
    again = store.publish(started)
    assert (again.seq, again.state) == (first.seq, first.state) == (1, "STARTED")
    found = store.read(task_id, 0)
    assert found.missed is not None and len(found.missed) == 1
    assert store.publish(EventDraft(task_id, State.SUCCESS, result_json="1")).seq == 2
