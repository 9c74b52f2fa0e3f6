"""Server frames of PROTOCOL.md §4, built in one place for the WebSocket and the
Server-Sent Events stream (whose `data:` lines carry the same JSON).

Event objects arrive from Redis already JSON-encoded; frames splice their
`type` in front instead of decoding and re-encoding per subscriber.
"""

import json
from typing import Any

from progress.wire.errors import ErrorCode
from progress.wire.event_json import encode_event
from progress.wire.objects import unknown_object


def object_frame(kind: str, object_json: str, reset: bool = False) -> str:
    """`{"type": kind, ...object}` for an encoded event/snapshot object."""
    head = f'{{"type":"{kind}","reset":true,' if reset else f'{{"type":"{kind}",'
    return head + object_json[1:]


def unknown_snapshot(task_id: str, reset: bool = False) -> str:
    """The snapshot of a task with no record, its object encoded as the record script
    encodes events (progress/wire/event_json.py)."""
    return object_frame("snapshot", encode_event(unknown_object(task_id)), reset)


def resumed(task_id: str, epoch: str, seq: int) -> str:
    return json.dumps({"type": "resumed", "task_id": task_id, "epoch": epoch, "seq": seq},
                      separators=(",", ":"))


def unsubscribed(task_id: str) -> str:
    return json.dumps({"type": "unsubscribed", "task_id": task_id}, separators=(",", ":"))


def cancelling(task_id: str) -> str:
    return json.dumps({"type": "cancelling", "task_id": task_id}, separators=(",", ":"))


def pong(ping_id: Any) -> str:
    return json.dumps({"type": "pong", "id": ping_id}, separators=(",", ":"))


def error(code: ErrorCode, detail: str, task_id: str | None = None) -> str:
    frame: dict[str, Any] = {"type": "error", "code": code.value, "detail": detail}
    if task_id is not None:
        frame["task_id"] = task_id
    return json.dumps(frame, separators=(",", ":"))
