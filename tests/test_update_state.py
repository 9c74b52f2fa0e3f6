"""Celery's own `self.update_state(...)` is streamed like `track(self).update(...)`,
and the AsyncResult mirror rides in the record script's round trip.

Real Redis throughout; the integration tests run tasks on the session's real
worker (Redis broker and result backend), on one with no result backend, and on
one with Celery's tutorial set-up (RabbitMQ broker, `rpc://` results).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery, Task, current_app
from celery.result import AsyncResult
from django.test import override_settings
from kombu import Queue

from progress.integrations.celery import interop
from progress.publisher import KEEP, forget, track
from progress.tokens import issue_token
from tests import processes
from tests.client import Ws, connect
from tests.conftest import SESSION_PREFIX, Stack
from tests.processes import AMQP_URL, amqp_reachable
from tests.publishing import PublishingStore

POLL_TIMEOUT = 20.0


async def watch(stack: Stack, task_id: str) -> list[dict[str, Any]]:
    """Every frame of `task_id` from the snapshot to the final event."""
    async with connect(stack.ws) as conn:
        ws = Ws(conn)
        await ws.subscribe(task_id, issue_token(task_id))
        return await ws.frames_until_final(task_id)


def assert_contiguous(frames: list[dict[str, Any]]) -> None:
    seqs = [f["seq"] for f in frames]
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), seqs


def progress_frames(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in frames if f["state"] == "PROGRESS"]


# -- unit: what an update_state call becomes ---------------------------------------


@pytest.mark.parametrize(("meta", "expected"), [
    ({"current": 3, "total": 10}, (3, 10, "KEEP", {})),
    ({"current": 3, "total": None}, (3, None, "KEEP", {})),
    ({"current": 1, "total": 4, "description": "d", "k": 1}, (1, 4, "d", {"k": 1})),
    ({"message": "m", "description": "d"}, (None, "KEEP", "m", {"description": "d"})),
    ({"message": None}, (None, "KEEP", None, {})),
    ({"percent": 40}, (40, 100, "KEEP", {})),
    ({"current": 5, "total": 8, "percent": 62}, (5, 8, "KEEP", {})),
    ({"current": "5", "total": True}, (None, "KEEP", "KEEP", {"current": "5", "total": True})),
    ({"message": 7}, (None, "KEEP", "KEEP", {"message": 7})),
    (None, (None, "KEEP", "KEEP", {})),
    ("uploading", (None, "KEEP", "KEEP", {"value": "uploading"})),
])
def test_progress_of_maps_update_state_meta(meta: Any, expected: tuple[Any, ...]) -> None:
    current, total, message, extra = interop.progress_of(meta)
    keep = KEEP
    got = (current, "KEEP" if total is keep else total, "KEEP" if message is keep else message,
           extra)
    assert got == expected


def test_update_state_is_wrapped_once_and_keeps_its_face() -> None:
    """Installing twice wraps once; the public method keeps Celery's signature and docstring."""
    import inspect

    wrapped = Task.update_state
    assert getattr(wrapped, interop.WRAPPED_MARKER) is True
    interop.install()
    assert Task.update_state is wrapped
    assert list(inspect.signature(Task.update_state).parameters) == [
        "self", "task_id", "state", "meta", "kwargs"]
    assert "Update task state" in (Task.update_state.__doc__ or "")


class WriteCountingBackend:
    """A result backend that only counts what it is asked to store."""

    def __init__(self) -> None:
        self.stored: list[tuple[str, Any, str]] = []

    def store_result(self, task_id: str, result: Any, state: str, request: Any = None,
                     **_: Any) -> None:
        self.stored.append((task_id, result, state))


def probe_task(backend: Any, name: str = "tests.unit.probe") -> Any:
    """A real Celery Task object (so update_state is Celery's, wrapped) on `backend`."""
    probe_class: Any = type("Probe", (Task,), {"name": name, "backend": backend,
                                               "__module__": __name__})
    probe_class.bind(current_app)
    return probe_class()


def test_update_state_writes_the_backend_once(store: PublishingStore, task_id: str) -> None:
    """Celery's own write stores the tutorial's meta; the reporter's mirror does not
    write it a second time, while a track() call after it still mirrors."""
    backend = WriteCountingBackend()
    task = probe_task(backend)
    task.push_request(id=task_id)
    try:
        with override_settings(TASKPULSE_MIN_INTERVAL=0):
            for i in (1, 2, 3):
                task.update_state(state="PROGRESS", meta={"current": i, "total": 3})
            assert backend.stored == [(task_id, {"current": i, "total": 3}, "PROGRESS")
                                      for i in (1, 2, 3)]
            snapshot = store.read(task_id).snapshot
            assert snapshot is not None
            event = json.loads(snapshot.json)
            assert event["state"] == "PROGRESS" and event["seq"] == 3
            assert event["progress"] == {"current": 3, "total": 3, "percent": 100.0,
                                         "message": None}
            track(task).update(message="now through track")
            assert len(backend.stored) == 4 and backend.stored[-1][1]["message"] == (
                "now through track")
    finally:
        task.pop_request()
        forget(task_id)


def test_update_state_without_result_backend_streams_and_never_raises(
        store: PublishingStore, task_id: str, caplog: pytest.LogCaptureFixture) -> None:
    """A DisabledBackend drops Celery's write (as Celery does); the event still goes out."""
    from celery.backends.base import DisabledBackend

    task = probe_task(DisabledBackend(app=current_app))
    task.push_request(id=task_id)
    try:
        with override_settings(TASKPULSE_MIN_INTERVAL=0):
            task.update_state(state="PROGRESS", meta={"current": 1, "total": 2})
            task.update_state(state="SPOOLING", meta={"current": 2, "total": 2})
    finally:
        task.pop_request()
        forget(task_id)
    snapshot = store.read(task_id).snapshot
    assert snapshot is not None
    event = json.loads(snapshot.json)
    assert event["seq"] == 2 and event["meta"] == {"state": "SPOOLING"}
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]


def test_api_doc_example(store: PublishingStore) -> None:
    """docs/API.md's update_state task, run as Celery runs it: streamed to the end."""
    import re
    import types
    from pathlib import Path

    doc = Path(__file__).resolve().parent.parent / "docs" / "API.md"
    [code] = [block for block in re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)
              if "def upload_files" in block]
    module = types.ModuleType(f"api_doc_{uuid.uuid4().hex}")
    exec(compile(code, str(doc), "exec"), module.__dict__)
    task_id = f"docs-{uuid.uuid4()}"
    module.upload_files.apply(args=(["a.csv", "b.csv", "c.csv"],), task_id=task_id)
    snapshot = store.read(task_id).snapshot
    assert snapshot is not None
    final = json.loads(snapshot.json)
    store.delete(task_id)
    assert final["state"] == "SUCCESS" and final["result"] == 3
    assert final["progress"]["current"] == 3 and final["progress"]["total"] == 3
    assert final["meta"] == {"file": "c.csv"}


# -- the mirror in the record script's round trip ----------------------------------


class Monitor:
    """Redis MONITOR in a thread: every command the server runs, top-level or from Lua."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=10)
        self.commands: list[dict[str, Any]] = []
        self.marker = f"tp-monitor-end-{uuid.uuid4()}"
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.client.monitor() as monitor:  # type: ignore[no-untyped-call]
            self._ready.set()
            while True:
                command = monitor.next_command()
                if self.marker in command["command"]:
                    return
                self.commands.append(command)

    def __enter__(self) -> Monitor:
        self._thread.start()
        self._ready.wait(5)
        time.sleep(0.1)  # MONITOR is set up once the server answered it
        return self

    def __exit__(self, *_: Any) -> None:
        self.client.echo(self.marker)
        self._thread.join(10)
        self.client.close()

    def about(self, text: str) -> list[dict[str, Any]]:
        return [c for c in self.commands if text in c["command"]]


def test_published_call_mirrors_in_the_same_round_trip(store: PublishingStore,
                                                       task_id: str) -> None:
    """One published progress call = one EVALSHA, which SETs and PUBLISHes Celery's result
    key from inside the script: no GET/SET of the result key from the worker."""
    from tests.conftest import REDIS_URL

    backend: Any = current_app.backend
    assert interop._is_our_redis(backend)
    result_key = interop._text(backend.get_key_for_task(task_id))
    task = probe_task(backend)
    task.push_request(id=task_id)
    calls = 5
    try:
        with override_settings(TASKPULSE_MIN_INTERVAL=0, TASKPULSE_ASYNCRESULT=True):
            progress = track(task)
            progress.update(0, total=calls)  # loads the script if this server lacks it
            with Monitor(REDIS_URL) as seen:
                for i in range(1, calls + 1):
                    progress.update(i, message=f"call {i}")
    finally:
        task.pop_request()
        forget(task_id)
    ours = seen.about(task_id)
    top_level = [c for c in ours if c["client_type"] != "lua"]
    assert [c["command"].split()[0] for c in top_level] == ["EVALSHA"] * calls
    assert all(result_key in c["command"] for c in top_level)
    in_script = [c["command"].split()[0] for c in seen.about(result_key)
                 if c["client_type"] == "lua"]
    assert in_script.count("SET") == calls and in_script.count("PUBLISH") == calls
    result: Any = AsyncResult(task_id)
    assert result.state == "PROGRESS"
    assert result.info == {"current": calls, "total": calls, "percent": 100.0,
                           "message": f"call {calls}", "eta": 0.0, "meta": {}}
    stored: Any = redis.Redis.from_url(REDIS_URL).get(result_key)
    assert result.info == json.loads(stored)["result"]
    backend.forget(task_id)


def test_in_script_mirror_reads_back_exactly(redis_client: Any, store: PublishingStore,
                                             task_id: str) -> None:
    """The record script cuts the mirrored object out of the event's progress fragment:
    strings and meta that look like the fragment's own punctuation survive intact."""
    backend: Any = current_app.backend
    task = probe_task(backend)
    task.push_request(id=task_id)
    message = 'tricky },"eta": \\" {"progress":{ \u00e9'
    meta = {"a": [1, {"b": '},"eta":null,"meta":{}'}], "c": None, "d": 2.5}
    try:
        with override_settings(TASKPULSE_MIN_INTERVAL=0):
            track(task).update(7, total=None, message=message, meta=meta)
    finally:
        task.pop_request()
        forget(task_id)
    result: Any = AsyncResult(task_id)
    assert result.state == "PROGRESS"
    assert result.info == {"current": 7, "total": None, "percent": None, "message": message,
                           "eta": None, "meta": meta}
    backend.forget(task_id)


FINAL_VALUES = [
    '{"status":"SUCCESS","result":{"rows":3},"traceback":null,"task_id":"%s"}',
    '{"status": "SUCCESS", "result": {"rows": 3}, "traceback": null, "task_id": "%s"}',
    '{ "result" : 1 ,\n "status" :\t"SUCCESS", "task_id": "%s" }',
    '{"status": "FAILURE", "result": {"exc_type": "ValueError"}, "task_id": "%s"}',
]


@pytest.mark.parametrize("stored", FINAL_VALUES, ids=["compact", "kombu", "reordered", "failure"])
@pytest.mark.parametrize("path", ["in the record script", "on its own"])
def test_mirror_never_overwrites_a_final_state(redis_client: Any, store: PublishingStore,
                                               task_id: str, stored: str, path: str) -> None:
    """Whatever the JSON spacing or key order, a stored SUCCESS (or FAILURE) stays."""
    backend: Any = current_app.backend
    key = interop._text(backend.get_key_for_task(task_id))
    value = stored % task_id
    redis_client.set(key, value)
    info: interop.ProgressMeta = {"current": 1, "total": 2, "percent": 50.0, "message": None,
                                  "eta": None, "meta": {}}
    try:
        if path == "on its own":
            interop.store_progress(None, task_id, info)
        else:
            task = probe_task(backend)
            task.push_request(id=task_id)
            try:
                with override_settings(TASKPULSE_MIN_INTERVAL=0):
                    track(task).update(1, total=2)
            finally:
                task.pop_request()
                forget(task_id)
            assert store.read(task_id).snapshot is not None  # the event itself went out
        assert redis_client.get(key).decode() == value
    finally:
        redis_client.delete(key)


# -- integration: tutorial tasks on the session's worker -----------------------------


@pytest.mark.integration
async def test_tutorial_task_streams_and_reads_through_asyncresult(stack: Stack) -> None:
    """update_state(PROGRESS, {current, total}) only: PROGRESS events in order with
    contiguous seqs on the socket, and AsyncResult shows PROGRESS with that meta meanwhile."""
    from tests.tasks import tutorial

    steps = 12
    started = tutorial.apply_async(kwargs={"steps": steps, "delay": 0.06})
    watching = asyncio.create_task(watch(stack, started.id))
    polled: list[Any] = []
    deadline = time.monotonic() + POLL_TIMEOUT
    while not watching.done() and time.monotonic() < deadline:
        result: Any = AsyncResult(started.id)
        if result.state == "PROGRESS":
            polled.append(result.info)
        await asyncio.sleep(0.03)
    frames = await watching
    assert_contiguous(frames)
    assert frames[-1]["state"] == "SUCCESS" and frames[-1]["result"] == {"steps": steps}
    progress = progress_frames(frames)
    assert len(progress) >= 2
    currents = [f["progress"]["current"] for f in progress]
    assert currents == sorted(currents) and currents[-1] == steps
    assert all(f["progress"]["total"] == steps and f["meta"] == {} for f in progress)
    assert progress[-1]["progress"]["percent"] == 100.0
    assert polled and all(info == {"current": info["current"], "total": steps}
                          for info in polled)
    assert started.get(timeout=POLL_TIMEOUT) == {"steps": steps}


@pytest.mark.integration
async def test_description_message_and_percent(stack: Stack) -> None:
    from tests.tasks import tutorial_described

    started = tutorial_described.apply_async(kwargs={"delay": 0.15})
    progress = progress_frames(await watch(stack, started.id))
    seen = [(f["progress"]["current"], f["progress"]["total"], f["progress"]["message"],
             f["meta"]) for f in progress]
    assert seen == [
        (1, 4, "copying", {"phase": "copy"}),
        (2, 4, "checking", {"description": "x"}),
        (75, 100, "checking", {}),
    ]


@pytest.mark.integration
async def test_custom_state_is_a_progress_event_naming_it(stack: Stack) -> None:
    """A state of the task's own goes out as PROGRESS with meta["state"]; AsyncResult
    keeps Celery's own view (the custom state)."""
    from tests.tasks import custom_state

    started = custom_state.apply_async(kwargs={"delay": 0.3})
    watching = asyncio.create_task(watch(stack, started.id))
    states: set[str] = set()
    while not watching.done():
        states.add(AsyncResult(started.id).state)
        await asyncio.sleep(0.03)
    frames = await watching
    assert_contiguous(frames)
    assert {f["state"] for f in frames} <= {"PENDING", "STARTED", "PROGRESS", "SUCCESS"}
    progress = progress_frames(frames)
    assert [(f["progress"]["current"], f["meta"]) for f in progress] == [
        (1, {}), (2, {"state": "UPLOADING", "file": "a.csv"}), (3, {})]
    assert "UPLOADING" in states


@pytest.mark.integration
async def test_declared_failure_then_ignore_ends_failure(stack: Stack) -> None:
    """update_state(FAILURE, {exc_type, exc_message}) + raise Ignore(): the stream ends
    FAILURE with that error instead of waiting for the stall timeout."""
    from tests.tasks import declares_failure

    started = declares_failure.apply_async()
    frames = await watch(stack, started.id)
    assert frames[-1]["state"] == "FAILURE"
    assert frames[-1]["error"] == {"type": "ValueError", "message": "bad input"}
    assert AsyncResult(started.id).state == "FAILURE"


def test_every_recorded_error_message_is_capped(store: PublishingStore, task_id: str) -> None:
    """An exception's message (the signal hooks' path) is cut like a progress message,
    in the one place every event of a worker goes through."""
    from progress.publisher import publish
    from progress.store.records import EventDraft
    from progress.wire.encoding import error_info
    from progress.wire.states import State

    with override_settings(TASKPULSE_MESSAGE_MAX_CHARS=50):
        publish(EventDraft(task_id, State.STARTED, name="t"))
        publish(EventDraft(task_id, State.FAILURE, error=error_info(ValueError("y" * 5000))))
    forget(task_id)
    snap = store.read(task_id).snapshot
    assert snap is not None
    assert json.loads(snap.json)["error"] == {"type": "ValueError", "message": "y" * 49 + "\u2026"}


@pytest.mark.integration
async def test_a_declared_failure_message_is_capped(stack: Stack) -> None:
    """A FAILURE declared through update_state with a runaway message reaches the watcher
    cut to TASKPULSE_MESSAGE_MAX_CHARS, like a progress message."""
    from progress import conf
    from tests.tasks import declares_failure

    started = declares_failure.apply_async(kwargs={"exc_message": "x" * 100_000})
    error = (await watch(stack, started.id))[-1]["error"]
    limit = conf.message_max_chars()
    assert error["type"] == "ValueError"
    assert error["message"] == "x" * (limit - 1) + "\u2026"


@pytest.mark.integration
async def test_cancel_stops_a_tutorial_task(stack: Stack, store: PublishingStore) -> None:
    """A cancelled tutorial task stops at its next published update_state and ends REVOKED."""
    from tests.tasks import tutorial

    started = tutorial.apply_async(kwargs={"steps": 400, "delay": 0.05})
    async with connect(stack.ws) as conn:
        ws = Ws(conn)
        await ws.subscribe(started.id, issue_token(started.id))
        await ws.until_progress()
        store.request_cancel(started.id)
        frames = await ws.frames_until_final(started.id)
    assert frames[-1]["state"] == "REVOKED"
    assert frames[-1]["progress"]["current"] < 400


# -- integration: other result backends ----------------------------------------------




@pytest.fixture(scope="module")
def no_backend_worker(stack: Stack) -> Iterator[str]:
    """A worker whose Celery app has no result backend (DisabledBackend); its queue."""
    queue = f"{SESSION_PREFIX}-nobackend"
    env = processes.stack_env(SESSION_PREFIX, queue, {"CELERY_RESULT_BACKEND": "disabled://"})
    worker = processes.start_worker(env, f"{SESSION_PREFIX}-nobackend", concurrency=1)
    try:
        yield queue
    finally:
        worker.stop()
        output = worker.output(400)
    assert "could not stream" not in output and "Traceback" not in output, output


@pytest.mark.integration
async def test_update_state_without_result_backend(stack: Stack, no_backend_worker: str) -> None:
    task_id = str(uuid.uuid4())
    current_app.send_task("tests.tutorial", kwargs={"steps": 5, "delay": 0.12},
                          task_id=task_id, queue=no_backend_worker)
    frames = await watch(stack, task_id)
    assert_contiguous(frames)
    assert frames[-1]["state"] == "SUCCESS" and frames[-1]["result"] == {"steps": 5}
    assert [f["progress"]["current"] for f in progress_frames(frames)][-1] == 5


@pytest.fixture(scope="module")
def rpc_app(stack: Stack) -> Iterator[Celery]:
    """The tutorial's set-up: a RabbitMQ broker and `rpc://` results, worker and client."""
    if not amqp_reachable(AMQP_URL):
        print(f"\nskipping rpc:// tests: RabbitMQ does not answer at {AMQP_URL} "
              "(set TEST_AMQP_URL)")
        pytest.skip(f"RabbitMQ is not reachable at {AMQP_URL} (set TEST_AMQP_URL)")
    queue = f"{SESSION_PREFIX}-rpc"
    env = processes.stack_env(SESSION_PREFIX, queue, {"CELERY_BROKER_URL": AMQP_URL,
                                                      "CELERY_RESULT_BACKEND": "rpc://"})
    worker = processes.start_worker(env, f"{SESSION_PREFIX}-rpc", concurrency=1)
    app = Celery("taskpulse-rpc-client", broker=AMQP_URL, backend="rpc://",
                 set_as_current=False)
    app.conf.task_default_queue = queue
    try:
        yield app
    finally:
        worker.stop()
        with app.connection_for_write() as conn:
            Queue(queue).bind(conn.default_channel).delete()
        app.close()


@pytest.mark.integration
async def test_update_state_with_rpc_backend(stack: Stack, rpc_app: Celery) -> None:
    """With rpc:// results update_state still streams, and the client's AsyncResult gets
    Celery's own PROGRESS messages and then the result."""
    task_id = str(uuid.uuid4())
    result = rpc_app.send_task("tests.tutorial", kwargs={"steps": 6, "delay": 0.15},
                               task_id=task_id)
    watching = asyncio.create_task(watch(stack, task_id))
    infos: list[Any] = []
    while not watching.done():
        state: str = await asyncio.to_thread(lambda: result.state)
        if state == "PROGRESS":
            infos.append(result.info)
        await asyncio.sleep(0.05)
    frames = await watching
    assert_contiguous(frames)
    assert frames[-1]["state"] == "SUCCESS" and frames[-1]["result"] == {"steps": 6}
    currents = [f["progress"]["current"] for f in progress_frames(frames)]
    assert currents == sorted(currents) and currents[-1] == 6
    assert infos and all(info["total"] == 6 for info in infos)
    assert result.get(timeout=POLL_TIMEOUT) == {"steps": 6}
