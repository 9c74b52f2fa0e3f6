"""The whole path, worker -> Redis -> daphne -> WebSocket client, with real processes."""

import asyncio
import json
import time
import uuid
from typing import Any

import pytest
import websockets

from progress import conf
from progress.tokens import WATCH_AND_CANCEL, Permission, issue_token
from progress.wire import close_codes
from tests.client import Http, Ws, connect
from tests.conftest import SESSION_PREFIX, Stack

pytestmark = pytest.mark.integration


def seqs(frames: list[dict[str, Any]]) -> list[int]:
    return [f["seq"] for f in frames]


async def watch(stack: Stack, task_id: str, token: str) -> list[dict[str, Any]]:
    async with connect(stack.ws) as conn:
        ws = Ws(conn)
        await ws.subscribe(task_id, token)
        return await ws.frames_until_final(task_id)


async def test_happy_path_to_success(stack: Stack) -> None:
    """A task started over HTTP streams snapshot, contiguous progress events and SUCCESS."""
    status, started = Http(stack.http).start(steps=5, delay=0.2)
    assert status == 202, started
    assert started["ws_url"].startswith("ws://") and started["status_url"].endswith("/")
    frames = await watch(stack, started["task_id"], started["token"])
    assert frames[0]["type"] == "snapshot"
    assert all(f["type"] == "event" for f in frames[1:])
    assert seqs(frames) == list(range(frames[0]["seq"], frames[-1]["seq"] + 1))
    last = frames[-1]
    assert last["state"] == "SUCCESS" and last["final"] is True
    assert last["result"] == {"steps": 5}
    assert last["progress"]["percent"] == 100.0
    assert last["progress"]["message"] == "step 5 of 5"
    states = [f["state"] for f in frames]
    assert "PROGRESS" in states and states.index("PROGRESS") > 0


async def test_late_subscriber_gets_final_snapshot(stack: Stack) -> None:
    """A client subscribing after the task finished gets one final snapshot, then nothing."""
    _, started = Http(stack.http).start(steps=2, delay=0)
    await watch(stack, started["task_id"], started["token"])
    async with connect(stack.ws) as conn:
        ws = Ws(conn)
        await ws.subscribe(started["task_id"], started["token"])
        snap = await ws.recv()
        assert snap["type"] == "snapshot" and snap["state"] == "SUCCESS" and snap["final"]
        assert snap["result"] == {"steps": 2}
        await ws.send({"type": "ping", "id": 1})
        assert await ws.recv() == {"type": "pong", "id": 1}


async def test_failure_has_error_without_traceback(stack: Stack) -> None:
    """A task that raises ends FAILURE with its error type and message, and no traceback."""
    _, started = Http(stack.http).start(steps=4, delay=0.05, fail_at=3)
    frames = await watch(stack, started["task_id"], started["token"])
    last = frames[-1]
    assert last["state"] == "FAILURE"
    assert last["error"] == {"type": "ValueError", "message": "failed at step 3"}
    assert last["progress"]["current"] == 2
    assert "Traceback" not in json.dumps(frames)


async def test_datetime_result_still_succeeds(stack: Stack) -> None:
    """A task returning a datetime (not JSON) still reaches SUCCESS, with its repr."""
    from tests.tasks import returns_datetime

    task_id = str(uuid.uuid4())
    returns_datetime.apply_async(task_id=task_id)
    last = (await watch(stack, task_id, issue_token(task_id)))[-1]
    assert last["state"] == "SUCCESS"
    assert last["result"]["truncated"] is True and "2026" in last["result"]["repr"]


async def test_huge_result_is_truncated(stack: Stack) -> None:
    """A result over the size limit arrives as a truncated repr."""
    from tests.tasks import returns_huge

    task_id = str(uuid.uuid4())
    returns_huge.apply_async(task_id=task_id)
    last = (await watch(stack, task_id, issue_token(task_id)))[-1]
    assert last["state"] == "SUCCESS" and last["result"]["truncated"] is True
    assert len(last["result"]["repr"]) <= 2000


async def test_subscribe_without_token_is_forbidden(stack: Stack) -> None:
    """No token, a bad token, or another task's token: forbidden, and the socket stays open."""
    _, started = Http(stack.http).start(steps=1, delay=0)
    task_id = started["task_id"]
    async with connect(stack.ws) as conn:
        ws = Ws(conn)
        for token in (None, "garbage", issue_token("some-other-task")):
            frame = {"type": "subscribe", "task_id": task_id}
            if token is not None:
                frame["token"] = token
            await ws.send(frame)
            reply = await ws.recv()
            assert reply["type"] == "error" and reply["code"] == "forbidden"
            assert reply["task_id"] == task_id
        await ws.send({"type": "ping", "id": "still-open"})
        assert (await ws.recv())["type"] == "pong"


async def test_cross_origin_handshake_is_refused(stack: Stack) -> None:
    """A browser page from another origin cannot open the socket (HTTP 403)."""
    with pytest.raises(websockets.InvalidStatus) as caught:
        async with connect(stack.ws, origin="http://evil.example.com"):
            pass
    assert caught.value.response.status_code == 403
    async with connect(stack.ws, origin=f"http://localhost:{stack.port}") as conn:
        ws = Ws(conn)
        await ws.send({"type": "ping", "id": 2})
        assert (await ws.recv())["type"] == "pong"


async def test_unknown_differs_from_queued(stack: Stack) -> None:
    """A task never published is UNKNOWN; a published one no worker took is PENDING."""
    from project.demo.tasks import count

    queued_id, unknown_id = str(uuid.uuid4()), str(uuid.uuid4())
    # A queue no worker consumes; named after the session so the fixtures clean it up.
    count.apply_async(kwargs={"steps": 1}, task_id=queued_id, queue=f"{SESSION_PREFIX}-nobody")
    async with connect(stack.ws) as conn:
        ws = Ws(conn)
        await ws.subscribe(unknown_id, issue_token(unknown_id))
        unknown = await ws.recv()
        await ws.subscribe(queued_id, issue_token(queued_id))
        queued = await ws.recv()
    assert unknown["type"] == "snapshot" and unknown["state"] == "UNKNOWN"
    assert unknown["seq"] == 0 and unknown["final"] is False
    assert queued["state"] == "PENDING" and queued["seq"] == 1 and queued["name"] == "demo.count"


async def test_convenience_endpoint_subscribes_on_connect(stack: Stack) -> None:
    """/ws/progress/<id>/?token= streams the task without a subscribe frame."""
    _, started = Http(stack.http).start(steps=3, delay=0.1)
    async with connect(started["ws_url"]) as conn:
        frames = await Ws(conn).frames_until_final(started["task_id"])
    assert frames[0]["type"] == "snapshot" and frames[-1]["state"] == "SUCCESS"


async def test_many_tasks_on_one_connection(stack: Stack) -> None:
    """One socket multiplexes several tasks, each ending in its own final state."""
    http = Http(stack.http)
    started = [http.start(steps=3, delay=0.1)[1] for _ in range(3)]
    finals: dict[str, str] = {}
    async with connect(stack.ws) as conn:
        ws = Ws(conn)
        for s in started:
            await ws.subscribe(s["task_id"], s["token"])
        while len(finals) < len(started):
            frame = await ws.recv()
            if frame.get("final"):
                finals[frame["task_id"]] = frame["state"]
    assert finals == {s["task_id"]: "SUCCESS" for s in started}


async def test_unsubscribe_stops_events(stack: Stack) -> None:
    """After unsubscribe the client gets `unsubscribed` and no more events for that task."""
    _, started = Http(stack.http).start(steps=20, delay=0.1)
    async with connect(stack.ws) as conn:
        ws = Ws(conn)
        await ws.subscribe(started["task_id"], started["token"])
        assert (await ws.recv())["type"] == "snapshot"
        await ws.send({"type": "unsubscribe", "task_id": started["task_id"]})
        while (frame := await ws.recv())["type"] != "unsubscribed":
            assert frame["type"] == "event"
        await ws.send({"type": "unsubscribe", "task_id": started["task_id"]})
        assert (await ws.recv())["type"] == "unsubscribed"  # idempotent
        await ws.send({"type": "ping", "id": 3})
        assert await ws.recv() == {"type": "pong", "id": 3}


async def test_cancel_running_task(stack: Stack) -> None:
    """Cancelling a running task answers `cancelling`, then REVOKED arrives; again is 409."""
    from tests.tasks import slow_steps

    task_id = str(uuid.uuid4())
    slow_steps.apply_async(kwargs={"steps": 100, "delay": 0.05}, task_id=task_id)
    token = issue_token(task_id, WATCH_AND_CANCEL)
    async with connect(stack.ws) as conn:
        frames = await Ws(conn).cancel_when_running(task_id, token)
    assert {"type": "cancelling", "task_id": task_id} in frames
    assert frames[-1]["state"] == "REVOKED"
    status, body = Http(stack.http).request(
        "POST", f"/api/tasks/{task_id}/cancel/", headers={"Authorization": f"Bearer {token}"})
    assert status == 409 and body["error"]["code"] == "not_cancellable"


async def test_cancel_needs_cancel_permission(stack: Stack) -> None:
    """A watch-only token cannot cancel."""
    _, started = Http(stack.http).start(steps=1, delay=0)
    watch_only = issue_token(started["task_id"], frozenset({Permission.WATCH}))
    async with connect(stack.ws) as conn:
        ws = Ws(conn)
        await ws.send({"type": "cancel", "task_id": started["task_id"], "token": watch_only})
        reply = await ws.recv()
    assert reply["type"] == "error" and reply["code"] == "forbidden"


async def test_bad_input_gets_error_frames(stack: Stack) -> None:
    """Malformed frames get protocol errors; the connection keeps serving."""
    async with connect(stack.ws) as conn:
        ws = Ws(conn)
        for text, code in [("{nope", "bad_json"), ("[]", "bad_frame"),
                           ('{"type":"dance"}', "unknown_type"),
                           ('{"type":"subscribe","task_id":"../etc"}', "bad_task_id")]:
            await ws.send(text)
            reply = await ws.recv()
            assert (reply["type"], reply["code"]) == ("error", code)
        await conn.send(b"\x00binary")
        assert (await ws.recv())["code"] == "bad_frame"
        await ws.send({"type": "ping", "id": 9})
        assert await ws.recv() == {"type": "pong", "id": 9}


async def test_oversized_frame_closes_4009(stack: Stack) -> None:
    """A frame over the size limit closes the connection with 4009 (PROTOCOL.md §4)."""
    async with connect(stack.ws) as conn:
        await conn.send("x" * (64 * 1024 + 1))
        with pytest.raises(websockets.ConnectionClosed) as caught:
            await Ws(conn).recv()
    assert caught.value.rcvd is not None and caught.value.rcvd.code == close_codes.MESSAGE_TOO_BIG


async def test_a_client_busy_when_closed_still_reads_the_close_code(stack: Stack) -> None:
    """The server's close frame waits for the client's reply (CLOSE_HANDSHAKE_TIMEOUT,
    5 s) before the TCP connection goes: a client whose loop is busy for 2 s and then
    writes still reads the code. autobahn's own 1 s wait reset the connection, and a
    reset socket's first write loses the unread close frame: the client saw 1006."""
    async with connect(stack.ws) as conn:
        await conn.send("x" * (64 * 1024 + 1))
        time.sleep(2)  # busy: this loop reads nothing meanwhile
        with pytest.raises(websockets.ConnectionClosed) as caught:
            await conn.send(json.dumps({"type": "ping", "id": 1}))
            await Ws(conn).recv()
    assert caught.value.rcvd is not None and caught.value.rcvd.code == close_codes.MESSAGE_TOO_BIG


def test_http_status_endpoint(stack: Stack) -> None:
    """GET /api/tasks/<id>/ needs the token: 200 with the object, 403 without, 404 unknown."""
    http = Http(stack.http)
    status, started = http.start(steps=1, delay=0)
    task_id, token = started["task_id"], started["token"]
    status, body = http.request("GET", f"/api/tasks/{task_id}/",
                                headers={"Authorization": f"Bearer {token}"})
    assert status == 200 and body["task_id"] == task_id and body["seq"] >= 1
    status, body = http.request("GET", f"/api/tasks/{task_id}/?token={token}")
    assert status == 200
    status, body = http.request("GET", f"/api/tasks/{task_id}/")
    assert status == 403 and body["error"]["code"] == "forbidden"
    other = str(uuid.uuid4())
    status, body = http.request("GET", f"/api/tasks/{other}/?token={issue_token(other)}")
    assert status == 404 and body["error"]["code"] == "not_found"


def test_http_start_validates(stack: Stack) -> None:
    """Start refuses bad JSON, unknown tasks, bad arguments and missing CSRF."""
    http = Http(stack.http)
    headers = {"Content-Type": "application/json", "X-CSRFToken": http.csrf()}
    assert http.request("POST", "/api/tasks/", b"{oops", headers)[0] == 400
    assert http.start(task="os.system")[0] == 404
    status, body = http.start(steps=0)
    assert status == 400 and "steps" in body["error"]["detail"]
    assert http.start(delay=11)[0] == 400
    assert http.start(bogus=1)[0] == 400
    assert Http(stack.http).request("POST", "/api/tasks/", {"task": "demo.count"})[0] == 403


def test_healthz(stack: Stack) -> None:
    """/healthz answers ok while Redis is up."""
    assert Http(stack.http).request("GET", "/healthz") == (200, {"status": "ok", "redis": "ok"})


async def test_flood_is_rate_limited_then_closed_4008(stack: Stack) -> None:
    """A flooding client is closed with 4008 (after `rate_limited`, or at once when its
    unhandled frames pass the bound); others are served."""
    async with connect(stack.ws) as flooder, connect(stack.ws) as bystander:
        for i in range(400):
            await flooder.send(json.dumps({"type": "ping", "id": i}))
        replies: list[dict[str, Any]] = []
        with pytest.raises(websockets.ConnectionClosed) as caught:
            while True:
                replies.append(await Ws(flooder).recv())
        assert caught.value.rcvd is not None and caught.value.rcvd.code == close_codes.FLOODING
        codes = {r.get("code") for r in replies if r["type"] == "error"}
        # Rate-limited and then closed, or closed at once when the frames arrived
        # faster than the consumer handled them (the client backlog bound).
        assert codes <= {"rate_limited"}
        if codes:
            assert sum(r["type"] == "pong" for r in replies) >= 100  # the burst was served
        await Ws(bystander).send({"type": "ping", "id": "ok"})
        assert await Ws(bystander).recv() == {"type": "pong", "id": "ok"}


async def test_subscription_limit(stack: Stack) -> None:
    """Past 100 active subscriptions a connection gets too_many_subscriptions."""
    async with connect(stack.ws) as conn:
        ws = Ws(conn)
        ids = [f"limit-{uuid.uuid4().hex}" for _ in range(101)]
        for task_id in ids[:100]:
            await ws.subscribe(task_id, issue_token(task_id))
            assert (await ws.recv())["type"] == "snapshot"
        # 100 frames used the whole burst: stay within the rate limit for the 3
        # frames to come (a fast server answers 100 subscribes well within 60 ms).
        rate, _burst = conf.rate_limit()
        await asyncio.sleep(3 / rate + 0.05)
        await ws.subscribe(ids[100], issue_token(ids[100]))
        reply = await ws.recv()
        assert reply["type"] == "error" and reply["code"] == "too_many_subscriptions"
        await ws.send({"type": "unsubscribe", "task_id": ids[0]})
        assert (await ws.recv())["type"] == "unsubscribed"
        await ws.subscribe(ids[100], issue_token(ids[100]))
        assert (await ws.recv())["type"] == "snapshot"
