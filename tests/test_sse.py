"""The Server-Sent Events stream (docs/PROTOCOL.md, "Extension: Server-Sent Events") on
real servers: the tuned daphne launcher and uvicorn, each against a private Celery
worker, read through a streaming HTTP client (tests/sse_client.py). The cases are
the WebSocket's conformance cases, plus what only a stream has: `Last-Event-ID`,
`end` then 204, the keepalive comment."""

from __future__ import annotations

import asyncio
import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from progress.tokens import WATCH_ONLY, issue_token
from tests import processes
from tests.faultkit import (
    PrivateStack,
    Served,
    Watcher,
    private_stack,
    rss_kib,
    send_task,
    served_by,
)
from tests.sse_client import Message, SseResponse, events_query, open_stream

pytestmark = pytest.mark.integration

KEEPALIVE = 1.0
SLOW_READER_TIMEOUT = 3.0
MAX_STREAMS_PER_CLIENT = 6
# ~24 MB of progress messages (TASKPULSE_MESSAGE_MAX_CHARS cuts each at 1000 chars)
STEPS, PAD = 20_000, 1000
RSS_GROWTH_LIMIT_KIB = 16 * 1024
ALLOWED_ORIGIN = "http://127.0.0.1:8000"  # the example site's ALLOWED_HOSTS, DEBUG on


def uvicorn(env: dict[str, str], port: int) -> processes.Proc:
    # Open streams would hold a restart until their tasks end: docs/CLIENT.md says to
    # bound the graceful shutdown, as here (the clients resume with Last-Event-ID).
    return processes.uvicorn(env, port, "--timeout-graceful-shutdown", "1")


SERVERS = {"daphne": processes.daphne, "uvicorn": uvicorn}




@pytest.fixture(scope="module")
def worker_stack(redis_client: redis.Redis) -> Iterator[PrivateStack]:
    env = {"TASKPULSE_MIN_INTERVAL": "0", "DJANGO_DEBUG": "1",
           "TASKPULSE_SLOW_READER_TIMEOUT": str(SLOW_READER_TIMEOUT),
           "TASKPULSE_SSE_KEEPALIVE": str(KEEPALIVE),
           "TASKPULSE_MAX_SOCKETS_PER_CLIENT": str(MAX_STREAMS_PER_CLIENT)}
    with private_stack(env, webs=0) as running:
        yield running


@pytest.fixture(scope="module", params=sorted(SERVERS))
def served(request: pytest.FixtureRequest, worker_stack: PrivateStack) -> Iterator[Served]:
    with served_by(request.param, SERVERS[request.param], worker_stack) as running:
        yield running


def started(served: Served, name: str = "tests.slow_steps", **kwargs: Any) -> tuple[str, str]:
    task_id = send_task(served.stack, name, **kwargs)
    return task_id, issue_token(task_id, WATCH_ONLY)


def frames(messages: list[Message]) -> list[dict[str, Any]]:
    """The WebSocket frames a stream carried (every message but `end`)."""
    assert messages and messages[-1].event == "end", [m.event for m in messages]
    assert messages[-1].data == "{}"
    carried = [m.json() for m in messages[:-1]]
    assert [m.event for m in messages[:-1]] == [f["type"] for f in carried]
    return carried


def checked(carried: list[dict[str, Any]]) -> Watcher:
    watcher = Watcher()
    for frame in carried:
        watcher.check(frame)
    assert watcher.violations == []
    return watcher


async def error_of(response: SseResponse) -> tuple[int, str, str]:
    body = json.loads(await response.body())
    return response.status, body["error"]["code"], body["error"]["detail"]


async def test_happy_path(served: Served) -> None:
    """200 text/event-stream, `retry:`, a snapshot, contiguous events to SUCCESS, `end`."""
    task_id, token = started(served, steps=5, delay=0.1)
    async with open_stream(served.http, events_query([(task_id, token)])) as stream:
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["cache-control"] == "no-cache"
        assert stream.headers["x-accel-buffering"] == "no"
        carried = frames(await stream.until_end())
        assert stream.retry is not None
        assert await stream.next(timeout=5) is None  # the server closed the stream
    assert carried[0]["type"] == "snapshot"
    assert all(f["type"] == "event" for f in carried[1:])
    seqs = [f["seq"] for f in carried]
    assert seqs == list(range(seqs[0], seqs[-1] + 1))
    assert carried[-1]["state"] == "SUCCESS" and carried[-1]["result"] == {"steps": 5}
    checked(carried)


async def test_late_subscriber(served: Served) -> None:
    """After the task finished: one final snapshot, then `end`."""
    task_id, token = started(served, steps=1, delay=0)
    async with open_stream(served.http, events_query([(task_id, token)])) as stream:
        await stream.until_end()
    async with open_stream(served.http, events_query([(task_id, token)])) as late:
        carried = frames(await late.until_end())
    assert len(carried) == 1 and carried[0]["type"] == "snapshot"
    assert carried[0]["final"] and carried[0]["state"] == "SUCCESS"


async def test_failure(served: Served) -> None:
    """A task that raises: FAILURE with its error, then `end`."""
    task_id, token = started(served, "tests.fails_after", steps=2)
    async with open_stream(served.http, events_query([(task_id, token)])) as stream:
        carried = frames(await stream.until_end())
    assert carried[-1]["state"] == "FAILURE"
    assert carried[-1]["error"]["type"] == "ValueError"
    checked(carried)


async def test_several_tasks_on_one_stream(served: Served) -> None:
    """Three tasks on one stream: each from its snapshot to SUCCESS, then one `end`."""
    tasks = [started(served, steps=3, delay=0.05) for _ in range(3)]
    async with open_stream(served.http, events_query(tasks)) as stream:
        carried = frames(await stream.until_end())
    watcher = checked(carried)
    assert set(watcher.final) == {task_id for task_id, _ in tasks}
    assert all(f["state"] == "SUCCESS" for f in watcher.final.values())


async def test_unknown_task_then_its_events(served: Served) -> None:
    """A task with no record yet: an UNKNOWN snapshot, then its events as they come."""
    task_id = f"later-{served.kind}-{served.port}"
    token = issue_token(task_id, WATCH_ONLY)
    async with open_stream(served.http, events_query([(task_id, token)])) as stream:
        first = await stream.next()
        assert first is not None and first.event == "snapshot"
        assert first.json()["state"] == "UNKNOWN"
        send_task(served.stack, "tests.slow_steps", task_id, steps=2, delay=0.05)
        carried = frames(await stream.until_end())
    assert carried[-1]["state"] == "SUCCESS"


async def test_forbidden(served: Served) -> None:
    """A refused token: 403 `forbidden` naming the task, and no stream."""
    task_id, token = started(served, steps=1, delay=0)
    other = "someone-else"
    query = events_query([(task_id, token), (other, token)])
    async with open_stream(served.http, query) as stream:
        status, code, detail = await error_of(stream)
    assert (status, code) == (403, "forbidden") and other in detail


async def test_foreign_origin(served: Served) -> None:
    """A browser Origin that is not allowed: 403, even with good tokens."""
    task_id, token = started(served, steps=1, delay=0)
    query = events_query([(task_id, token)])
    async with open_stream(served.http, query, origin="https://evil.example") as stream:
        assert (await error_of(stream))[:2] == (403, "forbidden")
    async with open_stream(served.http, query, origin=ALLOWED_ORIGIN) as allowed:
        assert allowed.status == 200
        assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN


def test_cors_preflight(served: Served) -> None:
    """A cross-origin reconnect's preflight (Last-Event-ID is no safelisted header): 204
    with the CORS headers for an allowed origin, 403 for another."""
    asked = {"Access-Control-Request-Method": "GET",
             "Access-Control-Request-Headers": "last-event-id"}
    for origin, status in ((ALLOWED_ORIGIN, 204), ("https://evil.example", 403)):
        conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
        try:
            conn.request("OPTIONS", "/api/events/?task=a&token=b",
                         headers={"Origin": origin, **asked})
            response = conn.getresponse()
            response.read()
        finally:
            conn.close()
        assert response.status == status
        if status == 204:
            assert response.getheader("Access-Control-Allow-Origin") == origin
            assert "Last-Event-ID" in (response.getheader("Access-Control-Allow-Headers") or "")


@pytest.mark.parametrize(("query", "code"), [
    ("task=bad%20id&token=x", "bad_task_id"),
    ("", "bad_request"),
    ("task=a&task=b&token=x", "bad_request"),
    ("task=a&token=x&format=xml", "bad_request"),
])
async def test_bad_requests(served: Served, query: str, code: str) -> None:
    """A query the endpoint cannot read: 400 with §6's error body, before any stream."""
    async with open_stream(served.http, query) as stream:
        status, got, _ = await error_of(stream)
    assert (status, got) == (400, code)


async def test_too_many_subscriptions(served: Served) -> None:
    """More tasks than TASKPULSE_MAX_SUBSCRIPTIONS (100): 400 too_many_subscriptions."""
    pairs = [(f"t{i}", issue_token(f"t{i}", WATCH_ONLY)) for i in range(101)]
    async with open_stream(served.http, events_query(pairs)) as stream:
        assert (await error_of(stream))[:2] == (400, "too_many_subscriptions")


async def test_per_client_limit(served: Served) -> None:
    """Past TASKPULSE_MAX_SOCKETS_PER_CLIENT open streams from one client: 429."""
    task_id = f"idle-{served.kind}"
    query = events_query([(task_id, issue_token(task_id, WATCH_ONLY))])
    streams = [open_stream(served.http, query) for _ in range(MAX_STREAMS_PER_CLIENT)]
    opened = [await s.__aenter__() for s in streams]
    try:
        assert [s.status for s in opened] == [200] * MAX_STREAMS_PER_CLIENT
        async with open_stream(served.http, query) as refused:
            status, code, _ = await error_of(refused)
            assert (status, code) == (429, "rate_limited")
            assert "retry-after" in refused.headers
    finally:
        for s in reversed(streams):
            await s.__aexit__(None, None, None)


async def resume_after(served: Served, task_id: str, token: str,
                       last_id: str | None) -> list[dict[str, Any]]:
    query = events_query([(task_id, token)])
    async with open_stream(served.http, query, last_event_id=last_id) as again:
        assert again.status == 200
        return frames(await again.until_end())


async def test_resume_mid_task(served: Served) -> None:
    """Dropped mid-task, reconnected with Last-Event-ID: `resumed`, then the missed events
    and the rest, none twice, to SUCCESS."""
    task_id, token = started(served, steps=20, delay=0.1)
    async with open_stream(served.http, events_query([(task_id, token)])) as stream:
        seen = [(await stream.next()) for _ in range(4)]
        last_id = stream.last_id
    await asyncio.sleep(0.5)  # events published meanwhile are missed
    rest = await resume_after(served, task_id, token, last_id)
    assert rest[0]["type"] == "resumed" and rest[0]["seq"] == seen[-1].json()["seq"]  # type: ignore[union-attr]
    watcher = checked([m.json() for m in seen if m is not None] + rest)
    assert watcher.final[task_id]["state"] == "SUCCESS"


async def test_resume_after_web_restart(served: Served) -> None:
    """The web process restarts mid-task: the reconnect with Last-Event-ID resumes."""
    task_id, token = started(served, steps=60, delay=0.1)
    async with open_stream(served.http, events_query([(task_id, token)])) as stream:
        seen = [m.json() for m in [await stream.next() for _ in range(3)] if m is not None]
        served.restart()
        while (message := await stream.next(timeout=10)) is not None:  # what was on its way
            assert message.event != "end", "the stream outlived the restart"
            seen.append(message.json())
        last_id = stream.last_id
    rest = await resume_after(served, task_id, token, last_id)
    watcher = checked(seen + rest)
    assert watcher.final[task_id]["state"] == "SUCCESS"


async def test_resume_beyond_history(served: Served) -> None:
    """A resume id from another epoch (or past history): a `reset` snapshot."""
    task_id, token = started(served, steps=1, delay=0)
    async with open_stream(served.http, events_query([(task_id, token)])) as stream:
        await stream.until_end()
    from progress.web.resume_ids import Position, encode

    stale = encode([Position("another-epoch", 1, False)])
    rest = await resume_after(served, task_id, token, stale)
    assert rest[0]["type"] == "snapshot" and rest[0]["reset"] is True and rest[0]["final"]


async def test_unreadable_last_event_id_is_ignored(served: Served) -> None:
    """Garbage in Last-Event-ID: a fresh snapshot, never an error."""
    task_id, token = started(served, steps=1, delay=0)
    rest = await resume_after(served, task_id, token, "not*an:id")
    assert rest[0]["type"] == "snapshot" and "reset" not in rest[0]


async def test_end_then_204(served: Served) -> None:
    """Once every task was final, a reconnect with the last id gets 204 (EventSource stops)."""
    tasks = [started(served, steps=1, delay=0) for _ in range(2)]
    async with open_stream(served.http, events_query(tasks)) as stream:
        await stream.until_end()
        last_id = stream.last_id
    async with open_stream(served.http, events_query(tasks), last_event_id=last_id) as again:
        assert again.status == 204


async def test_final_task_not_sent_again(served: Served) -> None:
    """A resume where one task was already final sends only the other one."""
    done, done_token = started(served, steps=1, delay=0)
    async with open_stream(served.http, events_query([(done, done_token)])) as first:
        await first.until_end()
    running = started(served, steps=10, delay=0.1)
    from progress.web.resume_ids import START, decode, encode

    positions = decode(first.last_id, 1)
    assert positions is not None
    mixed = encode([*positions, START])
    async with open_stream(served.http, events_query([(done, done_token), running]),
                           last_event_id=mixed) as again:
        carried = frames(await again.until_end())
    assert {f["task_id"] for f in carried} == {running[0]}


async def test_keepalive(served: Served) -> None:
    """An idle stream gets a comment line every TASKPULSE_SSE_KEEPALIVE seconds."""
    task_id = f"never-{served.kind}"
    query = events_query([(task_id, issue_token(task_id, WATCH_ONLY))])
    async with open_stream(served.http, query) as stream:
        snapshot = await stream.next()
        assert snapshot is not None and snapshot.json()["state"] == "UNKNOWN"
        with pytest.raises(TimeoutError):  # comments only: no message to return
            await asyncio.wait_for(stream.next(), KEEPALIVE * 3.5)
        assert len(stream.comments) >= 2 and set(stream.comments) == {"keepalive"}


async def test_never_reading_client_stays_bounded(served: Served) -> None:
    """A client that stops reading while its task floods it: the server's memory stays
    bounded (progress coalesces, or the stream is cut), and the client still reaches
    SUCCESS: on the stream, or by resuming with Last-Event-ID."""
    baseline = rss_kib(served.proc.pid)
    task_id, token = started(served, "tests.chatty", steps=STEPS, pad=PAD)
    query = events_query([(task_id, token)])
    async with open_stream(served.http, query) as stream:
        first = await stream.next()
        assert first is not None
        peak = baseline
        for _ in range(int((SLOW_READER_TIMEOUT + 8) / 0.5)):
            await asyncio.sleep(0.5)
            peak = max(peak, rss_kib(served.proc.pid))
        assert peak - baseline < RSS_GROWTH_LIMIT_KIB, (baseline, peak)
        messages: list[Message] = [first]
        async with asyncio.timeout(60):
            while (message := await stream.next()) is not None:
                messages.append(message)
                if message.event == "end":
                    break
        last_id = stream.last_id
    # Far fewer messages than the task's events: the rest coalesced or were cut (what
    # got through before is what the kernel's socket buffers held, a few MB).
    assert len(messages) < STEPS // 2
    watcher = Watcher(allow_progress_skips=True)
    for message in messages:
        if message.event != "end":
            watcher.check(message.json())
    if messages[-1].event != "end":  # cut: resume
        for frame in await resume_after(served, task_id, token, last_id):
            watcher.check(frame)
    assert watcher.violations == []
    assert watcher.final[task_id]["state"] == "SUCCESS"


async def test_redis_down_is_503(tmp_path: Any) -> None:
    """With Redis unreachable, the stream is refused with §6's 503 `unavailable` and
    Retry-After, before any stream starts (the tuned launcher, on a Redis of its own)."""
    from tests.faultkit import own_redis

    with own_redis(str(tmp_path)) as (url, redis_proc), \
            private_stack({"DJANGO_DEBUG": "1"}, redis_url=url, worker=False) as stack:
        task_id = "down-1"
        query = events_query([(task_id, issue_token(task_id, WATCH_ONLY))])
        redis_proc.stop()
        async with open_stream(stack.http(), query) as stream:
            status, code, _ = await error_of(stream)
            assert (status, code) == (503, "unavailable")
            assert "retry-after" in stream.headers
