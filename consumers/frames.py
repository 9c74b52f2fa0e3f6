"""Client frames of PROTOCOL.md §4: parsing and validation, pure and typed.

`parse_frame` checks in the documented order: JSON, then shape and field
types, then `type`, then fields the type needs, then the task id. Tokens and
limits are checked by the consumer, which knows the connection.
"""

from dataclasses import dataclass
from typing import Any

from progress.wire.encoding import loads
from progress.wire.errors import ErrorCode
from progress.wire.ids import is_valid_task_id


@dataclass(frozen=True, slots=True)
class Subscribe:
    task_id: str
    token: str
    since: int | None = None
    epoch: str | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    task_id: str


@dataclass(frozen=True, slots=True)
class Cancel:
    task_id: str
    token: str


@dataclass(frozen=True, slots=True)
class Ping:
    id: str | int | float | None


ClientFrame = Subscribe | Unsubscribe | Cancel | Ping


class FrameError(Exception):
    def __init__(self, code: ErrorCode, detail: str, task_id: str | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.task_id = task_id


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# A `pong` echoes its ping's `id`: unbounded, a 60 KB ping from a client that never
# reads made the server hold a 60 KB pong per frame (PROTOCOL.md, Extensions).
PING_ID_MAX_CHARS = 128


def _is_ping_id(value: Any) -> bool:
    if value is None or isinstance(value, bool | float):
        return True  # short whatever its value
    if isinstance(value, str | int):
        return len(str(value)) <= PING_ID_MAX_CHARS
    return False


# Field -> (check, what the error says it must be); checked whatever the type.
FIELD_TYPES: dict[str, tuple[Any, str]] = {
    "type": (lambda v: isinstance(v, str), "a string"),
    "task_id": (lambda v: isinstance(v, str), "a string"),
    "token": (lambda v: isinstance(v, str), "a string"),
    "since": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
    "epoch": (lambda v: isinstance(v, str), "a string"),
    "id": (_is_ping_id, f"a string or number of at most {PING_ID_MAX_CHARS} characters"),
}

TYPES_NEEDING_TASK_ID = frozenset({"subscribe", "unsubscribe", "cancel"})
KNOWN_TYPES = TYPES_NEEDING_TASK_ID | {"ping"}


def parse_frame(text: str) -> ClientFrame:
    try:
        data = loads(text)
    except ValueError:  # also NaN/Infinity, and nesting deeper than Python parses
        raise FrameError(ErrorCode.BAD_JSON, "frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise FrameError(ErrorCode.BAD_FRAME, "frame must be a JSON object")
    task_id = data.get("task_id") if isinstance(data.get("task_id"), str) else None
    if "type" not in data:
        raise FrameError(ErrorCode.BAD_FRAME, "frame needs a 'type'", task_id)
    for field, (check, must_be) in FIELD_TYPES.items():
        if field in data and not check(data[field]):
            raise FrameError(ErrorCode.BAD_FRAME, f"'{field}' must be {must_be}", task_id)
    kind = data["type"]
    if kind not in KNOWN_TYPES:
        accepted = ", ".join(sorted(KNOWN_TYPES))
        raise FrameError(ErrorCode.UNKNOWN_TYPE, f"unknown type {kind!r}; use one of: {accepted}",
                         task_id)
    if kind == "ping":
        return Ping(data.get("id"))
    if task_id is None:
        raise FrameError(ErrorCode.BAD_FRAME, f"'{kind}' needs a 'task_id'")
    if ("since" in data) != ("epoch" in data):
        raise FrameError(ErrorCode.BAD_FRAME, "'since' and 'epoch' go together", task_id)
    if not is_valid_task_id(task_id):
        raise FrameError(ErrorCode.BAD_TASK_ID, "task ids match [A-Za-z0-9_.-]{1,80}", task_id)
    token = data.get("token", "")
    if kind == "unsubscribe":
        return Unsubscribe(task_id)
    if kind == "cancel":
        return Cancel(task_id, token)
    return Subscribe(task_id, token, data.get("since"), data.get("epoch"))
