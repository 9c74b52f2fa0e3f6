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

import redis

from progress import conf
from progress.store import keys, lua
from progress.store.connections import sync_clients
from progress.store.records import rest_fragment
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
    if client is not None:
        return _sweep_shard(client)
    marked: list[str] = []
    for shard, shard_client in enumerate(sync_clients()):
        try:
            marked += _sweep_shard(shard_client)
        except redis.RedisError as exc:
            logger.warning("TaskPulse sweep of shard %d failed (will retry): %s", shard, exc)
    return marked


def _sweep_shard(client: redis.Redis) -> list[str]:
    # Asked at every sweep, not only when tasks are due, so a change of server
    # (a fail-over) is noticed before its first stalled-looking task.
    if _redis_just_restarted(client):
        return []
    due_ids = client.register_script(lua.DUE)(keys=[keys.running_index_key()], args=[BATCH])
    if not due_ids:
        return []
    mark_lost = client.register_script(lua.MARK_LOST)
    marked = []
    for raw in due_ids:
        task_id = raw.decode() if isinstance(raw, bytes) else str(raw)
        seq = mark_lost(
            keys=[keys.record_key(task_id), keys.history_key(task_id), keys.running_index_key()],
            args=[task_id, rest_fragment(task_id, "null", lost_error()), conf.history_length(),
                  conf.final_ttl(), keys.group_channel(task_id)],
        )
        if int(seq):
            logger.warning("TaskPulse: task %s is LOST (no heartbeat)", task_id)
            marked.append(task_id)
    return marked


# id(client) -> (the server's run_id, when this process first saw it): a Sentinel
# client's server changes under the same client object at a fail-over.
_servers_seen: dict[int, tuple[str, float]] = {}


def _redis_just_restarted(client: redis.Redis) -> bool:
    """Within a stall timeout of a Redis restart, or of a fail-over to another server,
    missed heartbeats prove nothing: the workers could not record them (a promoted
    replica has a long uptime, but the deadlines it holds lapsed during the
    election). Give them a full timeout to beat again."""
    info = client.info("server")
    uptime = float(info.get("uptime_in_seconds", 0))
    if uptime < conf.stall_timeout():
        logger.info("TaskPulse: Redis restarted %.0fs ago; not marking stalled tasks yet", uptime)
        return True
    run_id, now = str(info.get("run_id", "")), time.monotonic()
    seen = _servers_seen.get(id(client))
    if seen is None or seen[0] != run_id:
        # A first sighting in this process waits for nothing; a change of server does.
        since = now if seen is not None else now - conf.stall_timeout()
        seen = _servers_seen[id(client)] = (run_id, since)
    if now - seen[1] < conf.stall_timeout():
        logger.info("TaskPulse: Redis server changed (fail-over) %.0fs ago; not marking "
                    "stalled tasks yet", now - seen[1])
        return True
    return False


class Sweeper:
    """A thread that sweeps every `conf.sweep_interval()` seconds until stopped."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Sweeper:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="taskpulse-sweeper",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(conf.sweep_interval() + 10)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(conf.sweep_interval()):
            try:
                sweep_once()
            except redis.RedisError as exc:
                logger.warning("TaskPulse sweep failed (will retry): %s", exc)
            except Exception:
                logger.exception("TaskPulse sweep failed")


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
