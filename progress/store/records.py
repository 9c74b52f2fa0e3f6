"""The Redis record store: one record and a capped history per task.

Every change is one Lua script call (progress/store/lua.py), so `seq` is assigned
atomically whatever the number of writers. `RecordStore` serves sync code
(Celery worker, Django views), `AsyncRecordStore` the consumers; both share
the argument building and result parsing below, and both take one client per
shard and run each call on the task's shard (progress/store/shards.py).
"""

import dataclasses
import functools
import itertools
import os
import random
import threading
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgpack
import redis
import redis.asyncio as aioredis

from progress import conf
from progress.process_state import ANY_SETTING, ProcessSlot
from progress.store import keys, lua, shards
from progress.wire.encoding import dumps, utc_now_iso
from progress.wire.event_json import ProgressJson
from progress.wire.states import State, is_final
from progress.wire.types import ErrorInfo

EPOCH_BITS = 48


@dataclass(frozen=True, slots=True)
class ResultWrite:
    """A write of the task's key in a result backend on the record's own Redis server
    (Celery's result key, for the AsyncResult mirror), done by the record script in
    the same round trip as the event: SET `before` + the event's progress as one JSON
    object (`{"current", "total", "percent", "message", "eta", "meta"}`) + `after`,
    with `expires` seconds (0: none), and PUBLISH it on the key, unless a final
    state is stored there (progress/store/lua.py, store_result). `before` and
    `after` are the same for every event of a task, so they are packed once."""

    key: str
    before: str
    after: str
    expires: int = 0


@dataclass(frozen=True, slots=True)
class EventDraft:
    """One state change as a publisher describes it, before Redis numbers it.

    `name` and `progress` left as None keep what the record holds, so a
    lifecycle event from another process does not erase the progress.
    """

    task_id: str
    state: State
    name: str | None = None
    progress: ProgressJson | None = None  # progress_json(...): the progress members
    result_json: str = "null"
    error: ErrorInfo | None = None
    # Arm the stall deadline (STARTED): LOST unless heartbeats follow within this many s.
    stall_timeout: float | None = None
    # Also write the task's result-backend key in the same round trip (the AsyncResult mirror).
    result_write: ResultWrite | None = None
    # The last seq this process recorded for the task (None: unknown): a record behind
    # it lost writes in a fail-over, and takes a new epoch (lua.record_event).
    known_seq: int | None = None
    # Unique per event (per draft): a retried call records it once (lua.record_event).
    event_id: str = dataclasses.field(default_factory=lambda: next_event_id())
    # The group (progress/store/groups.py) a member's final counts in, set by the
    # publisher: a final recorded again after a lossy fail-over (publisher/finals.py)
    # is counted in its group again too. The record script does not read it.
    group_id: str | None = None


@dataclass(frozen=True, slots=True)
class PublishOutcome:
    seq: int  # 0 when the record refused the event (already final, or PENDING twice)
    cancel_requested: bool
    state: str
    # Kept in the worker's outbox while Redis is away (seq 0 until it is recorded).
    buffered: bool = False

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


_event_ids = itertools.count()
# Random per process: a forked child draws its own.
_event_id_prefix: ProcessSlot[str] = ProcessSlot(lambda: os.urandom(6).hex())


def next_event_id() -> str:
    """An id no other event of any process has: a random per-process prefix and a count."""
    return f"{_event_id_prefix.get()}{next(_event_ids):x}"


def new_epoch() -> str:
    # A candidate goes with every published event. It is no secret, it only has
    # to differ from the task's earlier epochs: `random` does (it is reseeded in
    # a forked child) at half the cost of `secrets`, which asks the OS each time.
    return f"{random.getrandbits(EPOCH_BITS):012x}"


CANCELLED_ERROR: ErrorInfo = {"type": "TaskRevokedError", "message": "task cancelled"}


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """What asking a task to stop found: its state after the call (None: no record),
    and whether this was the first request (only then is the task system told)."""

    state: str | None
    first: bool


@dataclass(frozen=True, slots=True)
class _TaskNames:
    """What every event of one task repeats: its id (raw and in JSON), script keys,
    group channel and shard."""

    task_id: str
    keys: tuple[str, str, str]
    channel: str
    task_id_json: str
    shard: int


@functools.lru_cache(maxsize=4096)
def _task_names(prefix: str, shard_count: int, task_id: str) -> _TaskNames:
    """Cached because a hot progress loop would rebuild them for every event;
    `prefix` and `shard_count` are part of the cache key so a changed setting is honoured."""
    return _TaskNames(
        task_id, (keys.record_key(task_id), keys.history_key(task_id), keys.running_index_key()),
        keys.group_channel(task_id), dumps(task_id), shards.shard_of(task_id))


# (key prefix, history length, active TTL, final TTL, shard count), read once per
# settings change: each Django settings read costs about a microsecond, and a
# published progress call would make five of them.
_record_settings: ProcessSlot[tuple[str, int, int, int, int]] = ProcessSlot(
    lambda: (conf.key_prefix(), conf.history_length(), conf.active_ttl(), conf.final_ttl(),
             shards.count()),
    settings=ANY_SETTING)


class EventArgs(NamedTuple):
    """A record script's call for one event: its keys, its one argument (the event
    table record_event reads, msgpack-encoded: progress/store/lua.py) and the shard
    to run it on. (A tuple: one is built per published event.)"""

    keys: tuple[str, ...]
    argument: bytes
    shard: int = 0


# One packer for the process: msgpack.packb() makes a new one per call.
_packer = msgpack.Packer()


@functools.lru_cache(maxsize=4096)
def _task_members(prefix: str, shard_count: int, task_id: str, state: State,
                  name: str | None, stall_timeout: float | None, history: int, ttl: int,
                  write: ResultWrite | None) -> tuple[int, bytes]:
    """(count, msgpack pairs) of the event-table members that repeat for every event
    of a task in one state: packed once, not at each of a hot task's events."""
    names = _task_names(prefix, shard_count, task_id)
    members: dict[str, object] = {
        "task_id": task_id, "task_id_json": names.task_id_json, "channel": names.channel,
        "state": state.value, "final": is_final(state), "history": history, "ttl": ttl}
    if name is not None:
        members["name"] = dumps(name)
    if stall_timeout is not None:
        members["stall"] = stall_timeout
    if write is not None:
        members.update(result_before=write.before, result_after=write.after,
                       result_expires=write.expires)
    return len(members), _packer.pack(members)[_map_header_size(len(members)):]


def event_args(draft: EventDraft) -> EventArgs:
    """The record script's keys and argument for `draft` (PUBLISH; REQUEST_CANCEL and
    MARK_LOST take the same table)."""
    prefix, history_length, active_ttl, final_ttl, shard_count = _record_settings.get()
    names = _task_names(prefix, shard_count, draft.task_id)
    write = draft.result_write
    count, repeated = _task_members(
        prefix, shard_count, draft.task_id, draft.state, draft.name, draft.stall_timeout,
        history_length, final_ttl if is_final(draft.state) else active_ttl, write)
    varying: dict[str, object] = {
        "result": draft.result_json,
        "error": "null" if draft.error is None else dumps(draft.error),
        "updated_at": utc_now_iso(), "epoch": new_epoch(), "eid": draft.event_id}
    progress = draft.progress
    if progress is not None:
        varying["progress"], varying["eta"], varying["meta"] = progress
    if draft.known_seq is not None:
        varying["known_seq"] = draft.known_seq
    count += len(varying)
    packed = _packer.pack(varying)
    argument = _map_header(count) + repeated + packed[_map_header_size(len(varying)):]
    script_keys = names.keys if write is None else (*names.keys, write.key)
    return EventArgs(script_keys, argument, names.shard)


def _map_header_size(count: int) -> int:
    return 1 if count < 16 else 3


def _map_header(count: int) -> bytes:
    """msgpack's header of a map of `count` pairs: the pairs follow it as they are, so
    two packed maps' pairs make one map."""
    return bytes((0x80 | count,)) if count < 16 else b"\xde" + count.to_bytes(2, "big")


# -- carrying a result-backend write in the record script's round trip --------------


class ResultWriteOffer:
    """A publisher's offer, open (`with`) in its thread while it asks the task system to
    mirror one progress event: a mirror whose write is to the key of a result backend
    on the task's own Redis server hands it over (`carry`) instead of making a round
    trip of its own, and the publisher sends it with the event
    (EventDraft.result_write). A class rather than a @contextmanager generator:
    it is opened on every mirrored call, and costs a fraction of one."""

    __slots__ = ("_outer", "task_id", "write")

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.write: ResultWrite | None = None
        self._outer: ResultWriteOffer | None = None

    def carry(self, write: ResultWrite) -> None:
        self.write = write

    def __enter__(self) -> "ResultWriteOffer":
        self._outer = getattr(_offers, "current", None)
        _offers.current = self
        return self

    def __exit__(self, *_: object) -> None:
        _offers.current = self._outer


_offers = threading.local()


def result_write_offer(task_id: str) -> ResultWriteOffer | None:
    """The offer open in this thread for `task_id` and not taken yet, if any."""
    offer: ResultWriteOffer | None = getattr(_offers, "current", None)
    if offer is None or offer.task_id != task_id or offer.write is not None:
        return None
    return offer


def parse_publish(raw: list[Any]) -> PublishOutcome:
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


def _check_shards(clients: tuple[Any, ...]) -> None:
    if len(clients) != shards.count():
        raise ValueError(f"a record store takes one client per shard: {shards.count()} "
                         f"shards are configured (TASKPULSE_SHARDS), {len(clients)} clients given")


class _SyncShard:
    """The scripts of one shard's client."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.read = client.register_script(lua.READ)
        self.cancel = client.register_script(lua.REQUEST_CANCEL)


class RecordStore:
    """Sync access (Celery worker, Django views): one client per shard, in shard order."""

    def __init__(self, *clients: redis.Redis) -> None:
        _check_shards(clients)
        self._shards = [_SyncShard(client) for client in clients]

    def _on(self, task_id: str) -> _SyncShard:
        return self._shards[shards.shard_of(task_id)]

    def read(self, task_id: str, since: int | None = None) -> ReadResult:
        raw = self._on(task_id).read(keys=_read_keys(task_id),
                                     args=[-1 if since is None else since])
        return _parse_read(raw)

    def request_cancel(self, task_id: str) -> CancelRequest:
        """Ask the task to stop (lua.REQUEST_CANCEL): a queued task is REVOKED at once."""
        revoked = event_args(EventDraft(task_id, State.REVOKED, error=CANCELLED_ERROR))
        state, first = self._on(task_id).cancel(keys=revoked.keys, args=[revoked.argument])
        return CancelRequest(_text(state) or None, bool(int(first)))

    def delete(self, task_id: str) -> None:
        self._on(task_id).client.delete(*_read_keys(task_id))


class AsyncRecordStore:
    """Async access (consumers): one client per shard, in shard order."""

    def __init__(self, *clients: aioredis.Redis) -> None:
        _check_shards(clients)
        self._reads = [client.register_script(lua.READ) for client in clients]

    async def read(self, task_id: str, since: int | None = None) -> ReadResult:
        read = self._reads[shards.shard_of(task_id)]
        raw = await read(keys=_read_keys(task_id), args=[-1 if since is None else since])
        return _parse_read(raw)
