"""Recording an event: the record script on this process's own connection to the
task's shard, through the shard's outbox while Redis is away.

Calls go one way: the publish pipeline (publish.py) and the heartbeat's re-check of
kept finals (heartbeat.py, finals.py) call `deliver`; the outbox calls `record`.
A final `record` gets accepted is kept for those re-checks (finals.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from progress.process_state import ProcessSlot
from progress.publisher.finals import kept_finals
from progress.store import lua, shards
from progress.store.connections import SentinelScriptRunner, script_runner
from progress.store.outbox import outboxes
from progress.store.records import (
    EventArgs,
    EventDraft,
    PublishOutcome,
    event_args,
    parse_publish,
)
from progress.store.script_runner import ScriptRunner
from progress.wire.states import is_final

__all__ = ["TRANSIENT_REPLIES", "deliver", "publish_many", "record"]

# Replies that say "not now" rather than "no": a replica or an old master
# (READONLY, NOREPLICAS: a fail-over is under way, docs/SCALING.md "Sentinel"),
# a server replaying its AOF after a restart (LOADING), one busy with a long
# script (BUSY), a master being elected (MASTERDOWN) or a slot moving
# (TRYAGAIN). Each is treated like an unreachable Redis: the event is kept,
# in order, and retried until it is recorded (docs/GUARANTEES.md).
TRANSIENT_REPLIES = ("READONLY", "NOREPLICAS", "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN")

_Runner = ScriptRunner | SentinelScriptRunner


def _open_runners() -> list[_Runner]:
    return [script_runner(shard, lua.PUBLISH) for shard in range(shards.count())]


# The PUBLISH script on this process's own connection to each shard: a forked pool
# child opens its own, never writes to its parent's socket.
_runners: ProcessSlot[list[_Runner]] = ProcessSlot(_open_runners, settings=shards.SETTINGS)


def record(draft: EventDraft) -> PublishOutcome:
    """Run the record script for `draft` now; a "not now" reply is raised as a
    ConnectionError, which the outbox treats as Redis being away."""
    args = event_args(draft)
    runner = _runners.get()[args.shard]
    try:
        outcome = parse_publish(runner(args.keys, (args.argument,)))
    except redis.ResponseError as exc:
        if not str(exc).startswith(TRANSIENT_REPLIES):
            raise
        # Reconnect (a new master may be behind the address now), and let the
        # outbox keep the event and retry, in order, until Redis takes it.
        runner.close()
        raise redis.ConnectionError(f"Redis cannot record events right now: {exc}") from exc
    if outcome.accepted and is_final(draft.state):
        # Here rather than in deliver(): a final the outbox delivers later is kept too.
        # A fail-over may still lose it with nothing after it to tell; the heartbeat
        # re-checks it and records it again then (progress/publisher/finals.py).
        kept_finals().keep(draft, outcome.seq)
    return outcome


def deliver(draft: EventDraft) -> PublishOutcome:
    """Record `draft` through its shard's outbox: buffered, in order, while Redis is away."""
    boxes = outboxes()  # one per shard; with one, no shard to look up
    box = boxes[0] if len(boxes) == 1 else boxes[shards.shard_of(draft.task_id)]
    return box.publish(draft, record)


def publish_many(drafts: Sequence[EventDraft]) -> list[PublishOutcome]:
    """Record and push several events with one pipelined round trip per shard, for a
    process that publishes for many tasks at once (a batch job, a load generator).

    Each event is its own record-script run and PUBLISH, as with `publish`, in
    the order given. Unlike `publish` it neither buffers (a Redis error is
    raised, and events from the failed batch may or may not be recorded) nor
    aggregates groups: use it for plain tasks' events.
    """
    runners = _runners.get()
    on_shard: dict[int, list[tuple[int, EventArgs]]] = {}
    for i, draft in enumerate(drafts):
        args = event_args(draft)
        on_shard.setdefault(args.shard, []).append((i, args))
    outcomes: dict[int, PublishOutcome] = {}
    for shard, items in on_shard.items():
        replies = runners[shard].many([(a.keys, (a.argument,), ()) for _, a in items])
        for (i, _), raw in zip(items, replies, strict=True):
            outcomes[i] = parse_publish(raw)
    return [outcomes[i] for i in range(len(drafts))]
