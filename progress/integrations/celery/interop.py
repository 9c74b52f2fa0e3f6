"""AsyncResult interop: mirror published progress into Celery's result backend,
as `self.update_state(state="PROGRESS", meta={...})` would, so code written for
the classic Celery progress recipe keeps working with TaskPulse.

Only published calls write here (so it is throttled like everything else), and
only from the task's own threads: a write from the trailing flusher could land
after Celery stored SUCCESS/FAILURE and overwrite it.
"""

import logging
import os
from typing import Any, TypedDict

from celery import current_app
from celery.backends.base import DisabledBackend
from celery.backends.redis import RedisBackend
from redis.connection import parse_url

from progress.store import shards
from progress.store.script_runner import ScriptRunner

logger = logging.getLogger(__name__)

PROGRESS_STATE = "PROGRESS"
REDIS_DEFAULTS = {"host": "localhost", "port": 6379, "db": 0, "path": None}

# What Celery's RedisBackend.store_result does (SET with expiry, PUBLISH on the
# key for waiting .get() calls, never overwriting a stored SUCCESS), in one
# round trip instead of its GET + pipeline through its own client.
# KEYS: result key   ARGV: encoded meta (JSON), expiry seconds ("0" = none)
MIRROR = """
local cur = redis.call('GET', KEYS[1])
if cur and string.find(cur, '"status": "SUCCESS"', 1, true) then return 0 end
if ARGV[2] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""


class ProgressMeta(TypedDict):
    """`AsyncResult(id).info` while a task reports progress."""

    current: float
    total: float | None
    percent: float | None
    message: str | None
    eta: float | None
    meta: dict[str, Any]


def store_progress(task: Any, task_id: str, info: ProgressMeta) -> None:
    """Write PROGRESS + `info` for `task_id`; a backend problem is logged, never raised."""
    backend = getattr(task, "backend", None) or current_app.backend
    if isinstance(backend, DisabledBackend):
        return  # no result backend configured: nothing reads AsyncResult
    request = getattr(task, "request", None)
    if getattr(request, "id", None) != task_id:
        request = None  # called from another thread: the task's request is thread-local
    try:
        if not _mirror_directly(backend, task_id, info, request):
            backend.store_result(task_id, info, PROGRESS_STATE, request=request)
    except Exception:
        logger.warning("TaskPulse could not mirror progress of %s into the result backend",
                       task_id, exc_info=True)


# id(backend) -> the URL of our Redis it writes to, with JSON results; None: not ours
_direct: dict[int, str | None] = {}
_runners: dict[int, ScriptRunner] = {}


def _mirror_directly(backend: Any, task_id: str, info: ProgressMeta, request: Any) -> bool:
    """Write the result key on our own connection when the backend is our Redis."""
    if id(backend) not in _direct:
        _direct[id(backend)] = _our_url_of(backend)
    url = _direct[id(backend)]
    if url is None:
        return False
    meta = backend._get_result_meta(result=info, state=PROGRESS_STATE, traceback=None,
                                    request=request)
    meta["task_id"] = task_id
    expires = int(backend.expires or 0)
    _runner(url)([backend.get_key_for_task(task_id)], [backend.encode(meta), expires])
    return True


def _our_url_of(backend: Any) -> str | None:
    """The URL of the backend's server if it is TaskPulse's first shard (where Celery's
    results go by default); None when it is not, or that shard is a Sentinel master."""
    # Exactly RedisBackend (not Sentinel or another subclass), JSON results (the
    # script recognises SUCCESS in JSON) and the server and db TaskPulse uses.
    if type(backend) is not RedisBackend or getattr(backend, "serializer", None) != "json":
        return None
    url = shards.servers()[0]
    if not isinstance(url, str) or not hasattr(backend, "_get_result_meta"):
        return None
    url_params: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    ours = {**REDIS_DEFAULTS, **url_params}
    theirs = {**REDIS_DEFAULTS, **getattr(backend, "connparams", {})}
    return url if all(ours[name] == theirs[name] for name in REDIS_DEFAULTS) else None


def _is_our_redis(backend: Any) -> bool:
    return _our_url_of(backend) is not None


def _runner(url: str) -> ScriptRunner:
    pid = os.getpid()
    runner = _runners.get(pid)
    if runner is None:
        _runners.clear()
        runner = _runners[pid] = ScriptRunner(url, MIRROR)
    return runner
