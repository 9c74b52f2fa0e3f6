"""Follow a task over TaskPulse's WebSocket, from a machine that cannot reach its Redis.

    async for found in awatch_remote("wss://status.example.com/ws/progress/", task_id, token):
        ...

The same §3 objects in the same order as progress.watching.awatch, by the
client's side of PROTOCOL.md §4: subscribe, read the snapshot and the events,
and after a dropped connection subscribe again with `since`/`epoch` (a
`resumed` frame, then the missed events; or a `reset` snapshot). Needs the
`websockets` package (`pip install "taskpulse[remote]"`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Iterator
from typing import Any

from progress.watching import Deadline, on_private_loop
from progress.wire import close_codes
from progress.wire.errors import ErrorCode
from progress.wire.types import TaskObject

RECONNECT_PAUSES = (0.2, 0.5, 1.0, 2.0, 5.0)
# Close codes after which connecting again cannot help (PROTOCOL.md §4).
FINAL_CLOSES = frozenset({close_codes.FLOODING, close_codes.MESSAGE_TOO_BIG, 1003, 1008, 1009})
# Close codes that ask for a long pause first.
LATER_CLOSES = frozenset({close_codes.TRY_AGAIN_LATER, close_codes.TOO_MANY_SOCKETS, 1013})
LATER_PAUSE = 30.0
# Error codes that a new subscribe with the same token cannot fix.
REFUSALS = frozenset({ErrorCode.FORBIDDEN.value, ErrorCode.BAD_TASK_ID.value,
                      ErrorCode.BAD_FRAME.value})


class WatchRefused(Exception):
    """The server refused the subscription or closed the connection for good."""


def _websockets() -> Any:
    try:
        import websockets
    except ImportError:
        raise ImportError("watching over the WebSocket needs the websockets package: "
                          "pip install 'taskpulse[remote]'") from None
    return websockets


async def awatch_remote(url: str, task_id: str, token: str, *,
                        timeout: float | None = None) -> AsyncGenerator[TaskObject, None]:
    """The task's §3 objects in order until the final one, over the WebSocket at `url`
    (`ws(s)://host/ws/progress/`); `token` is the task's watch token. `timeout`
    (seconds) bounds the whole watch: TimeoutError past it."""
    websockets = _websockets()
    deadline = Deadline(timeout)
    last: tuple[str, int] | None = None  # (epoch, seq) of the last object yielded
    failures = 0
    while True:
        pause = RECONNECT_PAUSES[min(failures, len(RECONNECT_PAUSES) - 1)]
        try:
            async with websockets.connect(url, open_timeout=10) as conn:
                resume = {"since": last[1], "epoch": last[0]} if last else {}
                await conn.send(json.dumps({"type": "subscribe", "task_id": task_id,
                                            "token": token, **resume}))
                while True:
                    frame = json.loads(await asyncio.wait_for(conn.recv(), deadline.left()))
                    if frame.get("task_id") != task_id:
                        continue
                    failures = 0
                    found = _object_of(frame, last)
                    if found is None:
                        continue
                    last = (found["epoch"] or "", found["seq"])
                    yield found
                    if found["final"]:
                        return
        except websockets.ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
            if code in FINAL_CLOSES:
                raise WatchRefused(f"the server closed the connection ({code})") from None
            if code in LATER_CLOSES:
                pause = LATER_PAUSE
        except (OSError, websockets.InvalidHandshake):
            pass
        failures += 1
        await asyncio.sleep(deadline.bounded(pause))


def _object_of(frame: dict[str, Any], last: tuple[str, int] | None) -> TaskObject | None:
    """The §3 object a frame carries, None for one that carries none (or a duplicate)."""
    kind = frame.get("type")
    if kind == "error":
        if frame.get("code") in REFUSALS:
            raise WatchRefused(f"{frame['code']}: {frame.get('detail', '')}")
        return None  # unavailable, rate_limited: the server sends the catch-up itself
    if kind not in ("snapshot", "event"):
        return None  # resumed, pong, ...
    found: TaskObject = {key: value for key, value in frame.items()  # type: ignore[assignment]
                         if key not in ("type", "reset")}
    if kind == "event" and last is not None and found["epoch"] == last[0] \
            and found["seq"] <= last[1]:
        return None
    return found


def watch_remote(url: str, task_id: str, token: str, *,
                 timeout: float | None = None) -> Iterator[TaskObject]:
    """`awatch_remote` for synchronous code, on a private event loop."""
    return on_private_loop(awatch_remote(url, task_id, token, timeout=timeout))
