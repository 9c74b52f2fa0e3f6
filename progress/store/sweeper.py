"""The stall sweeper: marks LOST the running tasks whose worker stopped beating.

Every server process (consumers/serve.py) and every worker's main process runs
one; MARK_LOST checks and clears the deadline atomically, so however many
sweep, each stalled attempt gets exactly one LOST event. Each shard keeps its
own running index (progress/store/shards.py) and every sweeper sweeps every shard.
Run it alone with `python -m progress.store.sweeper` where the server is not started
by consumers.serve.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import redis

from progress import conf
from progress.periodic import Periodic
from progress.store import keys, lua, shards
from progress.store.connections import master_survey, server_client, sync_clients
from progress.store.records import EventDraft, event_args
from progress.wire.states import State
from progress.wire.types import ErrorInfo

logger = logging.getLogger(__name__)

BATCH = 100
LOST_ERROR_TYPE = "WorkerLost"


def lost_error() -> ErrorInfo:
    return {"type": LOST_ERROR_TYPE,
            "message": f"no heartbeat from the task's worker for {conf.stall_timeout():g}s"}


def sweep_once(client: redis.Redis | None = None) -> list[str]:
    """Mark every task past its stall deadline LOST, on every shard (or on `client`'s
    server only); the ids this call marked.

    A shard that cannot be reached is logged and skipped: the others are still swept.
    """
    return _sweep(_module_graces, client)


def _sweep(graces: Graces, client: redis.Redis | None) -> list[str]:
    if client is not None:
        return _sweep_given(graces, client)
    marked: list[str] = []
    for shard, shard_client in enumerate(sync_clients()):
        try:
            marked += _sweep_shard(graces, shard, shard_client)
        except redis.RedisError as exc:
            logger.warning("TaskPulse sweep of shard %d failed (will retry): %s", shard, exc)
    return marked


def _sweep_shard(graces: Graces, shard: int, client: redis.Redis) -> list[str]:
    key = (shard, repr(shards.servers()[shard]))
    found = master_survey(shard)
    if found is None:
        return _sweep_server(graces, key, client)
    # A Sentinel master: sweep the server every sentinel names now, and nothing while
    # they disagree or one is in a fail-over. A replaced master (alive until it is
    # demoted) holds the deadlines the workers stopped pushing out when they moved.
    if not found.settled:
        graces.hold(key, "a Redis fail-over is under way")
        return []
    master = server_client(shard, found.master)
    try:
        return _sweep_server(graces, key, master)
    finally:
        master.close()


def _sweep_given(graces: Graces, client: redis.Redis) -> list[str]:
    options = client.connection_pool.connection_kwargs  # the server, whatever the client object
    key = ("client", options.get("host"), options.get("port"), options.get("path"),
           options.get("db"))
    if not any(isinstance(host, dict) for host in shards.servers()):
        return _sweep_server(graces, key, client)
    # Sentinel masters: `client` may be connected to a replaced one; sweep it only if
    # it is the server the sentinels all name for some shard now.
    run_id = _run_id(client.info("server"))
    for shard in range(len(shards.servers())):
        found = master_survey(shard)
        if found is not None and found.settled:
            master = server_client(shard, found.master)
            try:
                if _run_id(master.info("server")) == run_id:
                    return _sweep_server(graces, key, client)
            finally:
                master.close()
    graces.hold(key, "this server is not the master the sentinels name now")
    return []


def _sweep_server(graces: Graces, key: Hashable, client: redis.Redis) -> list[str]:
    # Asked at every sweep, not only when tasks are due, so a change of server
    # (a fail-over) is noticed before its first stalled-looking task.
    if graces.holding(key, client):
        return []
    due_ids = client.register_script(lua.DUE)(keys=[keys.running_index_key()], args=[BATCH])
    if not due_ids:
        return []
    mark_lost = client.register_script(lua.MARK_LOST)
    marked = []
    for raw in due_ids:
        task_id = raw.decode() if isinstance(raw, bytes) else str(raw)
        lost = event_args(EventDraft(task_id, State.LOST, error=lost_error()))
        seq = mark_lost(keys=lost.keys, args=[lost.argument])
        if int(seq):
            logger.warning("TaskPulse: task %s is LOST (no heartbeat)", task_id)
            marked.append(task_id)
    return marked


def _run_id(info: dict[str, Any]) -> str:
    return str(info.get("run_id", ""))


@dataclass
class _Server:
    run_id: str
    grace_until: float  # monotonic time; no task is marked LOST on the server before it
    why: str = ""  # the reason of the grace logged at its start ("": none logged)


class Graces:
    """When a sweeper must not mark tasks LOST, per server it sweeps, logged once at the
    start and once at the end of each grace.

    Within a stall timeout of a Redis restart, of a fail-over to another server,
    or of the sweeper's own start (`new_sweeper_grace`), missed heartbeats prove
    nothing: the workers could not record them (a promoted replica has a long
    uptime, but the deadlines it holds lapsed during the election; a sweeper
    started during one cannot tell). Give them a full timeout to beat again.
    """

    def __init__(self, new_sweeper_grace: bool) -> None:
        self._new_sweeper_grace = new_sweeper_grace
        self._servers: dict[Hashable, _Server] = {}
        self._lock = threading.Lock()  # sweep_once may be called from several threads

    def holding(self, key: Hashable, client: redis.Redis) -> bool:
        """Whether the server behind `client` (known as `key`) is within a grace."""
        info = client.info("server")
        uptime, run_id = float(info.get("uptime_in_seconds", 0)), _run_id(info)
        now, stall = time.monotonic(), conf.stall_timeout()
        with self._lock:
            server, why, changed = self._servers.get(key), "", False
            if server is None:
                first_grace = now + stall if self._new_sweeper_grace else 0.0
                server = self._servers[key] = _Server(run_id, first_grace)
                why = "this sweeper just started" if first_grace else ""
            elif server.run_id != run_id:  # a restart, or a fail-over to another server
                server.run_id, server.grace_until, changed = run_id, now + stall, True
                why = "" if uptime < stall else "the Redis server changed (fail-over)"
            if uptime < stall and now + stall - uptime > server.grace_until:
                # (Extended a little at most sweeps: the uptime is in whole seconds.)
                server.grace_until = now + stall - uptime
            if uptime < stall:
                why = why or f"Redis restarted {uptime:.0f}s ago"
            if now < server.grace_until:
                if changed or not server.why:  # logged once per grace, not at every sweep
                    self._begin(server, why or "a Redis fail-over ended", server.grace_until - now)
                return True
            if server.why:
                logger.info("TaskPulse: grace over (%s); marking stalled tasks again", server.why)
                server.why = ""
            return False

    def hold(self, key: Hashable, why: str) -> None:
        """Mark nothing on this server now; its grace ends at the next `holding` past it."""
        with self._lock:
            server = self._servers.setdefault(key, _Server("", 0.0))
            if server.why != why:
                logger.info("TaskPulse: %s; not marking stalled tasks until it ends", why)
                server.why = why

    @staticmethod
    def _begin(server: _Server, why: str, left: float) -> None:
        logger.info("TaskPulse: %s; not marking stalled tasks for %.0fs", why, left)
        server.why = why


# sweep_once()'s: a first sighting waits for nothing (it is called when a caller wants a sweep).
_module_graces = Graces(new_sweeper_grace=False)


class Sweeper(Periodic):
    """A thread that sweeps every `conf.sweep_interval()` seconds until stopped."""

    def __init__(self) -> None:
        super().__init__("taskpulse-sweeper", conf.sweep_interval)
        # A new sweeper (a deploy, a worker spawn) may start during a fail-over's
        # election: it waits a stall timeout on every server before marking anything.
        self._graces = Graces(new_sweeper_grace=True)

    def run_once(self) -> None:
        _sweep(self._graces, None)


def main() -> None:
    """`DJANGO_SETTINGS_MODULE=mysite.settings python -m progress.store.sweeper`"""
    import os
    import sys

    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        sys.exit("progress.store.sweeper: set DJANGO_SETTINGS_MODULE to your site's settings "
                 "(e.g. DJANGO_SETTINGS_MODULE=mysite.settings python -m progress.store.sweeper)")
    import django

    django.setup()
    logging.basicConfig(level=logging.INFO)
    sweeper = Sweeper().start()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sweeper.stop()


if __name__ == "__main__":
    main()
