"""Typed shapes of the objects TaskPulse stores and sends (PROTOCOL.md §3)."""

from typing import Any, TypedDict


class ProgressInfo(TypedDict):
    current: float
    total: float | None
    percent: float | None
    message: str | None


class ErrorInfo(TypedDict, total=False):
    type: str
    message: str
    traceback: str


class TaskObject(TypedDict):
    """The event/snapshot object of PROTOCOL.md §3."""

    task_id: str
    name: str | None
    epoch: str | None
    seq: int
    state: str
    final: bool
    progress: ProgressInfo
    eta: float | None
    meta: dict[str, Any]
    result: Any
    error: ErrorInfo | None
    updated_at: str | None


class TaskEventMessage(TypedDict):
    """What the publisher's Lua script PUBLISHes on a task's channel-layer group.

    `data` is the event object already encoded as JSON, so a consumer forwards
    it without decoding and re-encoding it for every subscriber.
    """

    type: str  # always "task.event" -> ProgressConsumer.task_event
    task_id: str
    epoch: str
    seq: int
    state: str
    final: bool
    data: str
