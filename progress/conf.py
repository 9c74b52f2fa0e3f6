"""TaskPulse settings with their defaults, read from Django settings.

Every `TASKPULSE_*` name is defined here once (docs/SETTINGS.md lists them, and
tests/test_settings_reference.py holds the two together); other modules call
these functions rather than reading `settings` themselves. The names TaskPulse
0.2 read as `PROGRESS_*` still work, with a deprecation warning.
"""

import logging
import warnings
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from progress.process_state import ANY_SETTING, ProcessSlot

logger = logging.getLogger(__name__)

PREFIX = "TASKPULSE_"
LEGACY_PREFIX = "PROGRESS_"  # TaskPulse 0.2's settings prefix

# Values read once per process: a setting that settings.py leaves to its
# default costs Django's LazySettings two raised-and-caught AttributeErrors per
# lookup, and a connection looks up about nine (~6% of a connection storm's
# CPU, docs/BENCHMARKS.md "Profile"). Forgotten whenever a setting changes
# (override_settings in tests; progress/process_state.py).
_resolved: ProcessSlot[dict[str, Any]] = ProcessSlot(dict, settings=ANY_SETTING)

# Django's allowed hosts when DEBUG is on and ALLOWED_HOSTS is empty (HttpRequest.get_host).
DEBUG_LOCAL_HOSTS = (".localhost", "127.0.0.1", "[::1]")

# Defaults an example site reading the environment also needs (project/settings.py).
DEFAULT_START_RATE = "60/m"
DEFAULT_CANCEL_RATE = "60/m"
# ~17 KB an idle socket under the tuned launcher (docs/BENCHMARKS.md): ~170 MB a process.
DEFAULT_MAX_SOCKETS = 10_000
# Generous enough for an office behind one NAT address, small enough that one
# client cannot take a process's share alone.
DEFAULT_MAX_SOCKETS_PER_CLIENT = 500
DEFAULT_MESSAGE_MAX_CHARS = 1000
# A client that does not read holds at most this much queued (a frame may be
# 64 KiB) ...
DEFAULT_SEND_QUEUE_MAX_BYTES = 1024 * 1024
# ... and all of a process's clients together this much (docs/GUARANTEES.md,
# "Memory budget").
DEFAULT_SEND_QUEUE_PROCESS_MAX_BYTES = 64 * 1024 * 1024
# An IPv6 site is handed a /64 at least: one host may use any address in it.
DEFAULT_IPV6_PREFIX = 64
# Long enough for a page to subscribe after its socket opens; short enough that
# sockets holding nothing cannot fill a process (TASKPULSE_MAX_SOCKETS).
DEFAULT_IDLE_SOCKET_TIMEOUT = 60.0
# Under the idle timeouts of common proxies (nginx's proxy_read_timeout: 60 s).
DEFAULT_SSE_KEEPALIVE = 15.0


def _setting(name: str, default: object) -> Any:
    try:
        return _resolved.get()[name]
    except KeyError:
        value = _resolved.get()[name] = _read(name, default)
        return value


def _read(name: str, default: object) -> Any:
    """The setting `name` (TASKPULSE_...), else its name before 0.3 (PROGRESS_...),
    still honoured with a deprecation warning, else `default`."""
    if hasattr(settings, name):
        return getattr(settings, name)
    legacy = LEGACY_PREFIX + name.removeprefix(PREFIX)
    if legacy != name and hasattr(settings, legacy):
        warnings.warn(f"the setting {legacy} is deprecated: rename it {name}",
                      DeprecationWarning, stacklevel=4)
        logger.warning("TaskPulse: the setting %s is deprecated: rename it %s", legacy, name)
        return getattr(settings, legacy)
    return default


def _get(name: str, default: float) -> float:
    return float(_setting(name, default))


def key_prefix() -> str:
    return str(_setting("TASKPULSE_KEY_PREFIX", "tp"))


def final_ttl() -> int:
    """Seconds a record is kept after its final state (PROTOCOL.md §1)."""
    return int(_get("TASKPULSE_FINAL_TTL", 24 * 3600))


def active_ttl() -> int:
    """Seconds an unfinished record is kept after its last event (a queued task never run)."""
    return int(_get("TASKPULSE_ACTIVE_TTL", 7 * 24 * 3600))


def history_length() -> int:
    return int(_get("TASKPULSE_HISTORY_LENGTH", 200))


def token_max_age() -> int:
    return int(_get("TASKPULSE_TOKEN_MAX_AGE", 24 * 3600))


def result_max_bytes() -> int:
    return int(_get("TASKPULSE_RESULT_MAX_BYTES", 64 * 1024))


def meta_max_bytes() -> int:
    return int(_get("TASKPULSE_META_MAX_BYTES", 8 * 1024))


def send_traceback() -> bool:
    return bool(_setting("TASKPULSE_SEND_TRACEBACK", False))


def max_subscriptions() -> int:
    return int(_get("TASKPULSE_MAX_SUBSCRIPTIONS", 100))


def rate_limit() -> tuple[float, float]:
    """(frames per second, burst) a connection may send."""
    return _get("TASKPULSE_RATE_LIMIT", 50.0), _get("TASKPULSE_RATE_BURST", 100.0)


def flood_strikes() -> int:
    """Frames a rate-limited client may still send before it is closed with 1008."""
    return int(_get("TASKPULSE_FLOOD_STRIKES", 50))


def max_frame_bytes() -> int:
    return int(_get("TASKPULSE_MAX_FRAME_BYTES", 64 * 1024))


def stall_timeout() -> float:
    """Seconds without a worker heartbeat after which a running task is LOST (PROTOCOL.md §2)."""
    return _get("TASKPULSE_STALL_TIMEOUT", 60.0)


def heartbeat_interval() -> float:
    """Seconds between a worker's heartbeats: a quarter of the stall timeout, 0.2 to 15 s."""
    return min(15.0, max(0.2, stall_timeout() / 4))


def sweep_interval() -> float:
    """Seconds between two looks for stalled tasks: a sixth of the stall timeout, 0.2 to 5 s."""
    return min(5.0, max(0.2, stall_timeout() / 6))


def cancel_grace() -> float:
    """Seconds a cancelled running task has to reach a progress call before it is terminated."""
    return _get("TASKPULSE_CANCEL_GRACE", 10.0)


def outbox_max_events() -> int:
    """Events a worker process buffers while Redis is unreachable (progress/store/outbox.py)."""
    return int(_get("TASKPULSE_OUTBOX_MAX_EVENTS", 10_000))


def send_queue_max_frames() -> int:
    """Frames queued for a client that does not read before it is disconnected."""
    return int(_get("TASKPULSE_SEND_QUEUE_MAX_FRAMES", 1000))


def send_queue_max_bytes() -> int:
    """Bytes of frames (as sent, UTF-8) queued for a client that does not read before it
    is disconnected: a frame may be 64 KiB, so the frame count alone is no memory bound."""
    return int(_get("TASKPULSE_SEND_QUEUE_MAX_BYTES", DEFAULT_SEND_QUEUE_MAX_BYTES))


def send_queue_process_max_bytes() -> int:
    """Bytes queued for all the clients of one server process together; the connection
    that would queue past it is disconnected (docs/GUARANTEES.md, "Memory budget")."""
    return int(_get("TASKPULSE_SEND_QUEUE_PROCESS_MAX_BYTES",
                    DEFAULT_SEND_QUEUE_PROCESS_MAX_BYTES))


def slow_reader_timeout() -> float:
    """Seconds a client may leave frames unread before it is disconnected."""
    return _get("TASKPULSE_SLOW_READER_TIMEOUT", 30.0)


def progress_min_interval() -> float:
    """Seconds between two published progress calls of a task; calls in between coalesce."""
    return max(0.0, _get("TASKPULSE_MIN_INTERVAL", 0.1))


def asyncresult_interop() -> bool:
    """Mirror progress into Celery's result backend (AsyncResult(id).state == "PROGRESS")."""
    return bool(_setting("TASKPULSE_ASYNCRESULT", True))


def task_queues() -> list[str] | None:
    """Dotted paths of the enabled TaskQueue integrations; None: the default (Celery
    when installed). progress/taskqueue/registry.py."""
    value = _setting("TASKPULSE_TASK_QUEUES", None)
    return None if value is None else [str(path) for path in value]


def channel_layer_alias() -> str:
    """The channel-layer alias TaskPulse's consumers use; configured by TaskPulse itself
    unless the host's CHANNEL_LAYERS defines it (consumers/channel_layer.py)."""
    return str(_setting("TASKPULSE_CHANNEL_LAYER", "taskpulse"))


def token_keys() -> tuple[str | None, list[str | bytes] | None]:
    """(key, fallback keys) tokens are signed and checked with: TASKPULSE_TOKEN_KEY (and
    TASKPULSE_TOKEN_KEY_FALLBACKS) when set, else (None, None): SECRET_KEY and its fallbacks."""
    key = _setting("TASKPULSE_TOKEN_KEY", None)
    if not key:
        return None, None
    fallbacks: list[str | bytes] = [str(k) for k in _setting("TASKPULSE_TOKEN_KEY_FALLBACKS", [])]
    return str(key), fallbacks


def allowed_origins() -> list[str]:
    """Hosts a browser's Origin may name to open a WebSocket: TASKPULSE_ALLOWED_ORIGINS,
    else ALLOWED_HOSTS (a separate status server lists the host site's domain)."""
    origins = _setting("TASKPULSE_ALLOWED_ORIGINS", None)
    if origins is not None:
        return list(origins)
    if settings.DEBUG and not settings.ALLOWED_HOSTS:
        # What Django's own host check allows then (a fresh startproject site).
        return list(DEBUG_LOCAL_HOSTS)
    return list(settings.ALLOWED_HOSTS)


def start_rate() -> str:
    """Task starts a client address may make over HTTP: "N/s", "N/m", "N/h"; "0" = unlimited."""
    return str(_setting("TASKPULSE_START_RATE", DEFAULT_START_RATE))


def cancel_rate() -> str:
    """Cancels a client address may make (HTTP and WebSocket together); "0" = unlimited."""
    return str(_setting("TASKPULSE_CANCEL_RATE", DEFAULT_CANCEL_RATE))


def trusted_proxies() -> frozenset[str]:
    """Reverse proxies whose X-Forwarded-For names the client: addresses, networks
    ("10.0.0.0/8") and "unix" (a peer with no address: a Unix socket); empty: the
    peer's own address is the client's (a header from anyone else is ignored).
    Parsed by progress/control/clients.py."""
    value = _setting("TASKPULSE_TRUSTED_PROXIES", ())
    if isinstance(value, str):  # "unix" or "10.0.0.1, 10.0.0.2" rather than a list
        value = value.split(",")
    return frozenset(str(a).strip() for a in value if str(a).strip())


def ipv6_prefix() -> int:
    """Leading bits of an IPv6 address that name one client for the per-client limits."""
    prefix = int(_get("TASKPULSE_IPV6_PREFIX", DEFAULT_IPV6_PREFIX))
    if not 1 <= prefix <= 128:
        raise ImproperlyConfigured(f"TASKPULSE_IPV6_PREFIX={prefix} is not a prefix length: use "
                                   f"1 to 128 ({DEFAULT_IPV6_PREFIX}, a site's subnet, by default)")
    return prefix


def idle_socket_timeout() -> float:
    """Seconds a WebSocket may stay open with no subscription before it is closed
    (close code 4011); 0 = never."""
    return max(0.0, _get("TASKPULSE_IDLE_SOCKET_TIMEOUT", DEFAULT_IDLE_SOCKET_TIMEOUT))


def max_sockets() -> int:
    """Open WebSockets a server process accepts; past it new ones close with 1013."""
    return int(_get("TASKPULSE_MAX_SOCKETS", DEFAULT_MAX_SOCKETS))


def max_sockets_per_client() -> int:
    """Open WebSockets one client address may hold in a process (0 = no limit)."""
    return int(_get("TASKPULSE_MAX_SOCKETS_PER_CLIENT", DEFAULT_MAX_SOCKETS_PER_CLIENT))


def message_max_chars() -> int:
    """Characters of a progress message kept and sent; a longer one is cut, ending in "…"."""
    return max(1, int(_get("TASKPULSE_MESSAGE_MAX_CHARS", DEFAULT_MESSAGE_MAX_CHARS)))


def inbox_max_frames() -> int:
    """Client frames a connection may have read but not handled; past it, close 1008.
    Twice the rate limit's burst: a client within its rate is never closed for it."""
    return int(_get("TASKPULSE_INBOX_MAX_FRAMES", 2 * rate_limit()[1]))


def inbox_max_bytes() -> int:
    """Bytes of such frames a connection may hold; past it, close 1008."""
    return int(_get("TASKPULSE_INBOX_MAX_BYTES", 1024 * 1024))


def sse_keepalive() -> float:
    """Seconds between the comment lines that keep an idle Server-Sent Events stream
    alive through proxies (progress/web/sse.py); 0 = none."""
    return max(0.0, _get("TASKPULSE_SSE_KEEPALIVE", DEFAULT_SSE_KEEPALIVE))


def ping_interval() -> int:
    """Seconds between the launcher's WebSocket pings (consumers/server/serve.py)."""
    return int(_get("TASKPULSE_PING_INTERVAL", 20))


def ping_timeout() -> int:
    """Seconds a peer may leave a ping unanswered before the launcher drops it."""
    return int(_get("TASKPULSE_PING_TIMEOUT", 30))
