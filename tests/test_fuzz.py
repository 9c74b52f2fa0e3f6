"""Fuzz: thousands of random and malformed frames. Every reply is a protocol frame (an error
with a documented code, or the answer a valid frame gets) or a documented close code; the
server logs no traceback and keeps serving a well-behaved client in parallel."""

import asyncio
import json
import random
import string
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import websockets

from progress.tokens import WATCH_AND_CANCEL, WATCH_ONLY, issue_token
from progress.wire import close_codes
from progress.wire.errors import ErrorCode
from tests.client import Http, Ws, connect
from tests.faultkit import PrivateStack, private_stack

pytestmark = pytest.mark.integration

FRAMES = 3000
FUZZERS = 3
MAX_FRAME = 8 * 1024
CLIENT_ERRORS = {ErrorCode.BAD_JSON, ErrorCode.BAD_FRAME, ErrorCode.UNKNOWN_TYPE,
                 ErrorCode.BAD_TASK_ID, ErrorCode.FORBIDDEN, ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                 ErrorCode.RATE_LIMITED, ErrorCode.NOT_CANCELLABLE}
ANSWERS = {"pong", "snapshot", "resumed", "unsubscribed", "cancelling", "event"}
CLOSE_CODES = {close_codes.FLOODING, close_codes.MESSAGE_TOO_BIG}


@pytest.fixture(scope="module")
def stack(redis_client: redis.Redis) -> Iterator[PrivateStack]:
    env = {"TASKPULSE_RATE_LIMIT": "400", "TASKPULSE_RATE_BURST": "200",
           "TASKPULSE_MAX_FRAME_BYTES": str(MAX_FRAME), "TASKPULSE_MAX_SUBSCRIPTIONS": "20"}
    with private_stack(env) as running:
        yield running


NOT_JSON_NUMBERS = ["NaN", "Infinity", "-Infinity"]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(9 if depth < 3 else 6)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice([True, False])
    if pick == 2:
        return rng.choice([0, -1, 1, 2**63, 1.5, float("1e308")])
    if pick in (3, 4, 5):
        return "".join(rng.choice(string.printable + "é€\u0000\ud7ff") for _ in range(
            rng.randrange(12)))
    if pick in (6, 7):
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {str(random_value(rng, 3)): random_value(rng, depth + 1) for _ in range(3)}


def protocol_like(rng: random.Random) -> dict[str, Any]:
    """A protocol frame, often valid, otherwise with one field wrong, missing or extra."""
    task_id = rng.choice([str(uuid.uuid4()), str(uuid.uuid4()), "ok.id-1", "../etc", "", "x" * 81])
    kind = rng.choice(["subscribe", "subscribe", "unsubscribe", "cancel", "ping"])
    frame: dict[str, Any] = {"type": kind}
    if kind == "ping":
        frame["id"] = rng.choice([1, "x", None, 2.5])
    else:
        frame["task_id"] = task_id
    if kind in ("subscribe", "cancel"):
        frame["token"] = rng.choice([issue_token(task_id or "x", WATCH_AND_CANCEL), "garbage",
                                     issue_token(task_id or "x", WATCH_ONLY)])
    if kind == "subscribe" and rng.random() < 0.3:
        frame.update(since=rng.randrange(5), epoch=rng.choice(["abc", "0123456789ab"]))
    if rng.random() < 0.5:
        field = rng.choice(["type", "task_id", "token", "since", "epoch", "id", "extra"])
        if rng.random() < 0.3:
            frame.pop(field, None)
        else:
            frame[field] = rng.choice([5, None, ["a"], {"b": 1}, True, -1, 1.5, "dance", ""])
    return frame


def fuzz_frame(rng: random.Random) -> str | bytes:
    pick = rng.random()
    if pick < 0.35:
        return json.dumps(protocol_like(rng))
    if pick < 0.55:
        return json.dumps(random_value(rng))
    if pick < 0.65:
        text = json.dumps(protocol_like(rng))
        cut = rng.randrange(len(text))
        return text[:cut] + rng.choice(["", "\\", '"', "}", "\u0000"]) + text[cut + 1:]
    if pick < 0.72:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    if pick < 0.78:
        return "[" * rng.randrange(1000, MAX_FRAME - 10)  # nested deeper than Python parses
    if pick < 0.79:
        return "x" * (MAX_FRAME + rng.randrange(1, 1000))  # over the size limit
    if pick < 0.84:
        # NaN and Infinity where a number goes: not JSON, answered bad_json
        text = json.dumps(protocol_like(rng))
        return text.replace("}", ', "since": ' + rng.choice(NOT_JSON_NUMBERS) + "}", 1)
    if pick < 0.88:
        # a lone surrogate, escaped (valid JSON text, no valid UTF-8 string inside)
        return json.dumps({**protocol_like(rng), "task_id": rng.choice(["\ud800", "a\udfff"])})
    return "".join(rng.choice(string.printable) for _ in range(rng.randrange(40)))


def check_reply(reply: Any) -> None:
    assert isinstance(reply, str), f"binary reply {reply!r}"
    frame = json.loads(reply)
    if frame["type"] == "error":
        assert frame["code"] in CLIENT_ERRORS, frame
        assert "Traceback" not in frame["detail"]
    else:
        assert frame["type"] in ANSWERS, frame


async def fuzz(url: str, seed: int, frames: int) -> dict[str, int]:
    rng = random.Random(seed)
    seen: dict[str, int] = {}
    sent = 0
    while sent < frames:
        try:
            async with connect(url) as conn:
                while sent < frames:
                    await conn.send(fuzz_frame(rng))
                    sent += 1
                    reply = await asyncio.wait_for(conn.recv(), 10)
                    check_reply(reply)
                    kind = json.loads(reply).get("code") or json.loads(reply)["type"]
                    seen[kind] = seen.get(kind, 0) + 1
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code in CLOSE_CODES, closed
            seen[f"close {closed.rcvd.code}"] = seen.get(f"close {closed.rcvd.code}", 0) + 1
    return seen


async def well_behaved(stack: PrivateStack, done: asyncio.Event) -> list[str]:
    """Watches a real task to SUCCESS and pings throughout; each pong within a second."""
    status, started = Http(stack.http()).start(steps=20, delay=0.2)
    assert status == 202
    states = []
    async with connect(stack.ws()) as conn:
        ws = Ws(conn)
        await ws.subscribe(started["task_id"], started["token"])
        ping = 0
        while not done.is_set() or "SUCCESS" not in states:
            ping += 1
            await ws.send({"type": "ping", "id": ping})
            while (frame := await ws.recv(timeout=5))["type"] != "pong":
                states.append(frame["state"])
            assert frame["id"] == ping
            await asyncio.sleep(0.1)
    return states


async def test_fuzz_never_breaks_the_protocol(stack: PrivateStack) -> None:
    """Random, malformed, binary, deeply nested and oversized frames from several clients."""
    done = asyncio.Event()
    bystander = asyncio.create_task(well_behaved(stack, done))
    try:
        results = await asyncio.gather(*(fuzz(stack.ws(), seed, FRAMES // FUZZERS)
                                         for seed in range(FUZZERS)))
    finally:
        done.set()
        states = await asyncio.wait_for(bystander, 60)
    seen: dict[str, int] = {}
    for result in results:
        for kind, n in result.items():
            seen[kind] = seen.get(kind, 0) + n
    assert states[-1] == "SUCCESS"
    too_big = f"close {close_codes.MESSAGE_TOO_BIG}"
    for kind in ("bad_json", "bad_frame", "unknown_type", "bad_task_id", "forbidden", "pong",
                 "not_cancellable", "snapshot", "unsubscribed", too_big):
        assert seen.get(kind), (kind, seen)
    log = stack.webs[0].output(10_000)
    assert "Traceback" not in log, log[-3000:]
