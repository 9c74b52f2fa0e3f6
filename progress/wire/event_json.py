"""The event object of PROTOCOL.md §3 (`TaskObject`) as JSON, built in one place.

The record script completes every stored and published event: it alone assigns
`epoch` and `seq` atomically, and a lifecycle event takes the progress the
record holds. So the object is assembled in Lua, by `encode_event` below, which
is generated from `EVENT_MEMBERS`, the same member list `encode_event()` in
Python writes (for objects TaskPulse builds itself, such as the UNKNOWN
snapshot). Publishers encode the members they know here too: the progress
members (`ProgressJson`), and the flat progress object the AsyncResult mirror
stores (`progress_info`, `PROGRESS_INFO_LUA`).

Event objects are sent to clients as the script encoded them, never decoded
and re-encoded per subscriber (progress/wire/server_frames.py).
"""

from __future__ import annotations

import math
from enum import Enum
from typing import NamedTuple

from progress.wire.encoding import dumps
from progress.wire.types import TaskObject


class Kind(Enum):
    """How the record script gets a member: what `e.<member>` holds in Lua."""

    TEXT = "text"  # a string written between quotes as it is (no escaping needed: ours)
    NUMBER = "number"  # a Lua number
    BOOLEAN = "boolean"  # a Lua boolean
    JSON = "json"  # the member's value, already JSON-encoded


# The members of an event object, in the order they are written.
EVENT_MEMBERS: tuple[tuple[str, Kind], ...] = (
    ("epoch", Kind.TEXT),  # hex
    ("seq", Kind.NUMBER),
    ("name", Kind.JSON),
    ("state", Kind.TEXT),  # a State value
    ("final", Kind.BOOLEAN),
    ("progress", Kind.JSON),
    ("eta", Kind.JSON),
    ("meta", Kind.JSON),
    ("task_id", Kind.JSON),
    ("result", Kind.JSON),
    ("error", Kind.JSON),
    ("updated_at", Kind.TEXT),  # ISO 8601 (utc_now_iso)
)
assert {name for name, _ in EVENT_MEMBERS} == set(TaskObject.__annotations__), (
    "EVENT_MEMBERS must list TaskObject's members")

# The progress members a record keeps for events that bring none of their own.
PROGRESS_MEMBERS = ("progress", "eta", "meta")


def encode_event(obj: TaskObject) -> str:
    """The object's JSON, members in the record script's order."""
    return "{" + ",".join(f'"{name}":{dumps(obj[name])}'  # type: ignore[literal-required]
                          for name, _ in EVENT_MEMBERS) + "}"


# Members the script reads from another field of `e`: the task id is there raw too
# (for the running index and the channel message).
LUA_FIELDS = {"task_id": "task_id_json"}
# Members the record script decides itself, passed to encode_event apart from `e`
# (not stored into it: a key added to a table can make Lua rehash it).
SCRIPT_MEMBERS = ("epoch", "seq", "name")


def _lua_encoder() -> str:
    """encode_event(e, epoch, seq, name) in Lua: one concatenation, literal text between
    the values."""
    parts: list[str] = []  # alternately literal text and a Lua expression
    text = "{"
    for i, (name, kind) in enumerate(EVENT_MEMBERS):
        value = name if name in SCRIPT_MEMBERS else f"e.{LUA_FIELDS.get(name, name)}"
        text += ("," if i else "") + f'"{name}":'
        if kind is Kind.TEXT:
            parts += [text + '"', value]
            text = '"'
        elif kind is Kind.BOOLEAN:
            parts += [text, f"({value} and 'true' or 'false')"]
            text = ""
        else:
            parts += [text, value]
            text = ""
    parts.append(text + "}")
    joined = " .. ".join(f"'{part}'" if i % 2 == 0 else part for i, part in enumerate(parts))
    return (f"local function encode_event(e, {', '.join(SCRIPT_MEMBERS)})\n"
            f"  return {joined}\nend\n")


# encode_event(e, epoch, seq, name) in the record script: `e` holds every other member
# as Kind says.
ENCODE_EVENT_LUA = _lua_encoder()


class ProgressJson(NamedTuple):
    """An event's progress members, each JSON-encoded: what a progress call publishes."""

    progress: str  # {"current", "total", "percent", "message"}
    eta: str
    meta: str


DEFAULT_PROGRESS = ProgressJson(
    '{"current":0,"total":null,"percent":null,"message":null}', "null", "{}")


def percent_of(current: float, total: float | None) -> float | None:
    """0-100, or None while the total is unknown (PROTOCOL.md §3)."""
    if not total:
        return None
    return round(max(0.0, min(100.0, current * 100.0 / total)), 2)


def progress_json(current: float, total: float | None, message: str | None,
                  eta: float | None, meta_json: str) -> ProgressJson:
    """The progress members of a progress call, as `encode_event` would write them."""
    # Formatted field by field: a hot progress loop publishes this up to every
    # TASKPULSE_MIN_INTERVAL, and dumps() of a dict costs several times more.
    percent = percent_of(current, total)
    return ProgressJson(
        f'{{"current":{_number(current)},"total":{_number(total)},'
        f'"percent":{_number(percent)},"message":{"null" if message is None else dumps(message)}}}',
        _number(eta), meta_json)


def progress_info(progress: ProgressJson) -> str:
    """The flat progress object `{"current", "total", "percent", "message", "eta", "meta"}`
    (Celery's AsyncResult.info while a task reports progress): the same as
    PROGRESS_INFO_LUA writes in the record script."""
    return f'{progress.progress[:-1]},"eta":{progress.eta},"meta":{progress.meta}}}'


# progress_info(e) in the record script.
PROGRESS_INFO_LUA = """local function progress_info(e)
  return string.sub(e.progress, 1, -2) .. ',"eta":' .. e.eta .. ',"meta":' .. e.meta .. '}'
end
"""


def _number(value: float | None) -> str:
    """JSON for a number or None, as dumps() would write it."""
    if value is None:
        return "null"
    if type(value) is int:
        return int.__repr__(value)
    if type(value) is float and math.isfinite(value):
        return float.__repr__(value)
    return dumps(value)  # anything else, including NaN and infinity, which it refuses
