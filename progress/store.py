"""The Redis record store: one record and a capped history per task.

Every change is one Lua script call (progress/lua.py), so `seq` is assigned
atomically whatever the number of writers. `RecordStore` serves sync code
(Celery worker, Django views), `AsyncRecordStore` the consumers; both share
the argument building and result parsing below.
"""

import secrets
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from progress import conf, keys, lua
from progress.encoding import dumps, utc_now_iso
from progress.states import State, is_final
from progress.types import ErrorInfo

DEFAULT_PROGRESS_FRAGMENT = (
    '"progress":{"current":0,"total":null,"percent":null,"message":null},"eta":null,"meta":{}'
)


@dataclass(frozen=True, slots=True)
class EventDraft:
    """One state change as a publisher describes it, before Redis numbers it.

    `name` and `progress_fragment` left as None keep what the record holds, so
    a lifecycle event from another process does not erase the progress.
    """

    task_id: str
    state: State
    name: str | None = None
    progress_fragment: str | None = None
    result_json: str = "null"
    error: ErrorInfo | None = None
    heartbeat_deadline: float | None = None


@dataclass(frozen=True, slots=True)
class PublishOutcome:
    seq: int  # 0 when the record refused the event (already final, or PENDING twice)
    cancel_requested: bool
    state: str

    @property
    def accepted(self) -> bool:
        return self.seq > 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    epoch: str
    seq: int
    json: str  # the latest event object, encoded


@dataclass(frozen=True, slots=True)
class ReadResult:
    snapshot: Snapshot | None  # None: no record for this task
    missed: list[str] | None  # events after `since`; None when history cannot cover it


def progress_fragment(
    current: float,
    total: float | None,
    message: str | None,
    eta: float | None,
    meta_json: str,
) -> str:
    percent = None
    if total:
        percent = round(max(0.0, min(100.0, current * 100.0 / total)), 2)
    progress = {"current": current, "total": total, "percent": percent, "message": message}
    return f'"progress":{dumps(progress)},"eta":{dumps(eta)},"meta":{meta_json}'


def new_epoch() -> str:
    return secrets.token_hex(6)


def _publish_args(draft: EventDraft) -> tuple[list[str], list[Any]]:
    final = is_final(draft.state)
    rest = (
        f'"task_id":{dumps(draft.task_id)},"result":{draft.result_json},'
        f'"error":{dumps(draft.error)},"updated_at":"{utc_now_iso()}"'
    )
    ttl = conf.final_ttl() if final else conf.active_ttl()
    args = [
        draft.task_id,
        draft.state.value,
        "1" if final else "0",
        "" if draft.name is None else dumps(draft.name),
        draft.progress_fragment or "",
        rest,
        new_epoch(),
        conf.history_length(),
        ttl,
        keys.group_channel(draft.task_id),
        "" if draft.heartbeat_deadline is None else repr(draft.heartbeat_deadline),
    ]
    return [keys.record_key(draft.task_id), keys.history_key(draft.task_id)], args


def _parse_publish(raw: list[Any]) -> PublishOutcome:
    seq, cancel, state = raw
    return PublishOutcome(int(seq), bool(int(cancel)), _text(state))


def _read_keys(task_id: str) -> list[str]:
    return [keys.record_key(task_id), keys.history_key(task_id)]


def _parse_read(raw: list[Any]) -> ReadResult:
    if not raw:
        return ReadResult(None, None)
    epoch, seq, json_text, covered, *events = raw
    snapshot = Snapshot(_text(epoch), int(seq), _text(json_text))
    missed = [_text(e) for e in events] if int(covered) else None
    return ReadResult(snapshot, missed)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RecordStore:
    """Sync access (Celery worker, Django views)."""

    def __init__(self, client: redis.Redis) -> None:
        self._publish = client.register_script(lua.PUBLISH)
        self._read = client.register_script(lua.READ)
        self._cancel = client.register_script(lua.REQUEST_CANCEL)
        self._client = client

    def publish(self, draft: EventDraft) -> PublishOutcome:
        script_keys, args = _publish_args(draft)
        return _parse_publish(self._publish(keys=script_keys, args=args))

    def read(self, task_id: str, since: int | None = None) -> ReadResult:
        raw = self._read(keys=_read_keys(task_id), args=[-1 if since is None else since])
        return _parse_read(raw)

    def request_cancel(self, task_id: str) -> str | None:
        """Flag the task for cancellation; its state, or None when unknown."""
        state = self._cancel(keys=[keys.record_key(task_id)])
        return None if state is None else _text(state)

    def delete(self, task_id: str) -> None:
        self._client.delete(*_read_keys(task_id))


class AsyncRecordStore:
    """Async access (consumers)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._read = client.register_script(lua.READ)

    async def read(self, task_id: str, since: int | None = None) -> ReadResult:
        raw = await self._read(keys=_read_keys(task_id), args=[-1 if since is None else since])
        return _parse_read(raw)
