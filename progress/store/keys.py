"""Redis key, group and channel names, defined once.

Keys of one task share a `{task_id}` hash tag so a Redis Cluster keeps
them in one slot and the Lua scripts stay valid there.
"""

from progress import conf


def record_key(task_id: str) -> str:
    return f"{conf.key_prefix()}:task:{{{task_id}}}"


def history_key(task_id: str) -> str:
    return f"{conf.key_prefix()}:hist:{{{task_id}}}"


def running_index_key() -> str:
    """Sorted set of running task ids scored by their stall deadline (progress/store/sweeper.py);
    each shard has its own, of the tasks it holds."""
    return f"{conf.key_prefix()}:running"


def workers_key() -> str:
    """Set, with an expiry, by every running worker that has TaskPulse
    (progress/publisher/presence.py): gone when none has beaten lately."""
    return f"{conf.key_prefix()}:workers"


def group_members_key(group_id: str) -> str:
    """Hash of a watched group's members and their states (progress/store/groups.py)."""
    return f"{conf.key_prefix()}:members:{{{group_id}}}"


def rate_key(action: str, client: str, window: int) -> str:
    """Counter of one client's `action` calls in one rate-limit window
    (progress/control/ratelimit.py); it expires with the window."""
    return f"{conf.key_prefix()}:rate:{action}:{client}:{window}"


def group_name(task_id: str) -> str:
    """Channel-layer group of a task (valid: task ids are [A-Za-z0-9_.-]{1,80})."""
    return f"task.{task_id}"


def group_channel(task_id: str) -> str:
    """The Redis pub/sub channel RedisPubSubChannelLayer uses for the task's group.

    Mirrors channels_redis.pubsub's `{prefix}__group__{group}` naming; the
    integration tests prove the two agree by delivering through both.
    """
    return f"{conf.key_prefix()}__group__{group_name(task_id)}"
