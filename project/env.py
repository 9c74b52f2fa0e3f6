"""Typed readers for settings that come from the environment.

Kept apart from settings.py so the same parsing (and its error messages)
serves settings, the Celery app and the scripts.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

from django.core.exceptions import ImproperlyConfigured

from progress.store.servers import HostEntry, from_environment, resolve

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
PREFIX, LEGACY_PREFIX = "TASKPULSE_", "PROGRESS_"  # the names before TaskPulse 0.3
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})


def _raw(name: str) -> str | None:
    """The variable `name`, else (for TASKPULSE_X) its old name PROGRESS_X."""
    raw = os.environ.get(name)
    if raw is None and name.startswith(PREFIX):
        raw = os.environ.get(LEGACY_PREFIX + name.removeprefix(PREFIX))
    return raw


def env_str(name: str, default: str) -> str:
    raw = _raw(name)
    return default if raw is None else raw


def env_bool(name: str, default: bool) -> bool:
    raw = _raw(name)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    accepted = ", ".join(sorted(TRUE_WORDS | FALSE_WORDS - {""}))
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean; use one of: {accepted}")


def env_number(name: str, default: float) -> float:
    raw = _raw(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None


def env_int(name: str, default: int) -> int:
    value = env_number(name, default)
    if value != int(value):
        raise ImproperlyConfigured(f"{name}={value!r} must be a whole number")
    return int(value)


def env_list(name: str, default: list[str]) -> list[str]:
    raw = _raw(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


# -- Redis servers ----------------------------------------------------------------


def env_redis_shards(default_url: str) -> list[HostEntry]:
    """The Redis servers from the environment alone (REDIS_URL, REDIS_SHARD_URLS or
    REDIS_SENTINELS + REDIS_SENTINEL_MASTER): TaskPulse's own rules, progress/store/servers.py."""
    return resolve(from_environment, default_url)


def celery_redis(host: HostEntry) -> tuple[str, dict[str, Any]]:
    """Celery's URL and transport options for a Redis server (broker or result backend)."""
    if isinstance(host, str):
        return host, {}
    password = host.get("password")
    auth = f":{quote(password, safe='')}@" if password else ""
    url = ";".join(f"sentinel://{auth}{_url_host(h)}:{p}/0" for h, p in host["sentinels"])
    return url, {"master_name": host["master_name"],
                 "sentinel_kwargs": dict(host.get("sentinel_kwargs", {}))}


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
