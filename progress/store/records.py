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
import math
import os
import random
import threading
from dataclasses import dataclass
from typing import Any, NamedTuple

import redis
import redis.asyncio as aioredis
from django.core.signals import setting_changed
from django.dispatch import receiver

from progress import conf
from progress.store import keys, lua, shards
from progress.wire.encoding import dumps, utc_now_iso
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

    `name` and `progress_fragment` left as None keep what the record holds, so
    a lifecycle event from another process does not erase the progress.
    """

    task_id: str
    state: State
    name: str | None = None
    progress_fragment: str | None = None
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


def percent_of(current: float, total: float | None) -> float | None:
    """0-100, or None while the total is unknown (PROTOCOL.md §3)."""
    if not total:
        return None
    return round(max(0.0, min(100.0, current * 100.0 / total)), 2)


def progress_fragment(
    current: float,
    total: float | None,
    message: str | None,
    eta: float | None,
    meta_json: str,
) -> str:
    # Formatted field by field: a hot progress loop publishes this up to every
    # PROGRESS_MIN_INTERVAL, and dumps() of a dict costs several times more.
    percent = percent_of(current, total)
    return (
        f'"progress":{{"current":{_number(current)},"total":{_number(total)},'
        f'"percent":{_number(percent)},"message":{"null" if message is None else dumps(message)}}},'
        f'"eta":{_number(eta)},"meta":{meta_json}'
    )


def _number(value: float | None) -> str:
    """JSON for a number or None, as dumps() would write it."""
    if value is None:
        return "null"
    if type(value) is int:
        return int.__repr__(value)
    if type(value) is float and math.isfinite(value):
        return float.__repr__(value)
    return dumps(value)  # anything else, including NaN and infinity, which it refuses


_event_ids = itertools.count()
_event_id_prefix = os.urandom(6).hex()


def _new_event_id_prefix_after_fork() -> None:
    global _event_id_prefix
    _event_id_prefix = os.urandom(6).hex()


os.register_at_fork(after_in_child=_new_event_id_prefix_after_fork)


def next_event_id() -> str:
    """An id no other event of any process has: a random per-process prefix and a count."""
    return f"{_event_id_prefix}{next(_event_ids):x}"


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


def rest_fragment(task_id: str, result_json: str, error: ErrorInfo | None) -> str:
    """The event fields after the progress, stamped now (PROTOCOL.md §3 `updated_at`)."""
    return _rest_fragment(dumps(task_id), result_json, error)


def _rest_fragment(task_id_json: str, result_json: str, error: ErrorInfo | None) -> str:
    return (
        f'"task_id":{task_id_json},"result":{result_json},'
        f'"error":{"null" if error is None else dumps(error)},"updated_at":"{utc_now_iso()}"'
    )


@dataclass(frozen=True, slots=True)
class _TaskNames:
    """What every event of one task repeats: its script keys, group channel, id in JSON
    and shard."""

    keys: tuple[str, str, str]
    channel: str
    task_id_json: str
    shard: int


@functools.lru_cache(maxsize=4096)
def _task_names(prefix: str, shard_count: int, task_id: str) -> _TaskNames:
    """Cached because a hot progress loop would rebuild them for every event;
    `prefix` and `shard_count` are part of the cache key so a changed setting is honoured."""
    return _TaskNames(
        (keys.record_key(task_id), keys.history_key(task_id), keys.running_index_key()),
        keys.group_channel(task_id), dumps(task_id), shards.shard_of(task_id))


@functools.cache
def _record_settings() -> tuple[str, int, int, int, int]:
    """(key prefix, history length, active TTL, final TTL, shard count), read once per
    settings change.

    Each Django settings read costs about a microsecond; a published progress
    call would make five of them.
    """
    return (conf.key_prefix(), conf.history_length(), conf.active_ttl(), conf.final_ttl(),
            shards.count())


@receiver(setting_changed)
def _forget_record_settings(**_: Any) -> None:
    _record_settings.cache_clear()


class PublishArgs(NamedTuple):
    """The PUBLISH script's keys and arguments (progress/store/lua.py), split in two:
    `leading` is the same for every event of a task in one state, `varying`
    changes with each event; `shard` is where to run it. (A tuple: one is built
    per published event.) A draft with a result write adds its key to `keys` and
    its three arguments to `leading`."""

    keys: tuple[str, ...]
    leading: tuple[str | int, ...]
    varying: tuple[str, str, str, str, str]
    shard: int = 0

    def flat(self) -> list[str | int]:
        return [*self.leading, *self.varying]


def publish_args(draft: EventDraft) -> PublishArgs:
    prefix, history_length, active_ttl, final_ttl, shard_count = _record_settings()
    names = _task_names(prefix, shard_count, draft.task_id)
    final = is_final(draft.state)
    leading = (
        draft.task_id,
        names.channel,
        draft.state.value,
        "1" if final else "0",
        "" if draft.name is None else dumps(draft.name),
        "" if draft.stall_timeout is None else repr(draft.stall_timeout),
        history_length,
        final_ttl if final else active_ttl,
    )
    rest = _rest_fragment(names.task_id_json, draft.result_json, draft.error)
    known = "" if draft.known_seq is None else str(draft.known_seq)
    varying = (draft.progress_fragment or "", rest, new_epoch(), known, draft.event_id)
    write = draft.result_write
    if write is None:
        return PublishArgs(names.keys, leading, varying, names.shard)
    return PublishArgs((*names.keys, write.key),
                       (*leading, write.before, write.after, write.expires), varying, names.shard)


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
        self.publish = client.register_script(lua.PUBLISH)
        self.read = client.register_script(lua.READ)
        self.cancel = client.register_script(lua.REQUEST_CANCEL)


class RecordStore:
    """Sync access (Celery worker, Django views): one client per shard, in shard order."""

    def __init__(self, *clients: redis.Redis) -> None:
        _check_shards(clients)
        self._shards = [_SyncShard(client) for client in clients]

    def _on(self, task_id: str) -> _SyncShard:
        return self._shards[shards.shard_of(task_id)]

    def publish(self, draft: EventDraft) -> PublishOutcome:
        args = publish_args(draft)
        return parse_publish(self._shards[args.shard].publish(keys=args.keys, args=args.flat()))

    def read(self, task_id: str, since: int | None = None) -> ReadResult:
        raw = self._on(task_id).read(keys=_read_keys(task_id),
                                     args=[-1 if since is None else since])
        return _parse_read(raw)

    def request_cancel(self, task_id: str) -> CancelRequest:
        """Ask the task to stop (lua.REQUEST_CANCEL): a queued task is REVOKED at once."""
        state, first = self._on(task_id).cancel(
            keys=[keys.record_key(task_id), keys.history_key(task_id), keys.running_index_key()],
            args=[task_id, rest_fragment(task_id, "null", CANCELLED_ERROR),
                  conf.history_length(), conf.final_ttl(), keys.group_channel(task_id)])
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
