"""TaskPulse settings with their defaults, read from Django settings.

Every `PROGRESS_*` name is defined here once; other modules call these
functions rather than reading `settings` themselves.
"""

from django.conf import settings


def _get(name: str, default: float) -> float:
    return float(getattr(settings, name, default))


def key_prefix() -> str:
    return str(getattr(settings, "PROGRESS_KEY_PREFIX", "tp"))


def final_ttl() -> int:
    """Seconds a record is kept after its final state (PROTOCOL.md §1)."""
    return int(_get("PROGRESS_FINAL_TTL", 24 * 3600))


def active_ttl() -> int:
    """Seconds an unfinished record is kept after its last event (a queued task never run)."""
    return int(_get("PROGRESS_ACTIVE_TTL", 7 * 24 * 3600))


def history_length() -> int:
    return int(_get("PROGRESS_HISTORY_LENGTH", 200))


def token_max_age() -> int:
    return int(_get("PROGRESS_TOKEN_MAX_AGE", 24 * 3600))


def result_max_bytes() -> int:
    return int(_get("PROGRESS_RESULT_MAX_BYTES", 64 * 1024))


def meta_max_bytes() -> int:
    return int(_get("PROGRESS_META_MAX_BYTES", 8 * 1024))


def send_traceback() -> bool:
    return bool(getattr(settings, "PROGRESS_SEND_TRACEBACK", False))


def max_subscriptions() -> int:
    return int(_get("PROGRESS_MAX_SUBSCRIPTIONS", 100))


def redis_url() -> str:
    return str(settings.REDIS_URL)


def rate_limit() -> tuple[float, float]:
    """(frames per second, burst) a connection may send."""
    return _get("PROGRESS_RATE_LIMIT", 50.0), _get("PROGRESS_RATE_BURST", 100.0)


def flood_strikes() -> int:
    """Frames a rate-limited client may still send before it is closed with 1008."""
    return int(_get("PROGRESS_FLOOD_STRIKES", 50))


def max_frame_bytes() -> int:
    return int(_get("PROGRESS_MAX_FRAME_BYTES", 64 * 1024))
