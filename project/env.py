"""Typed readers for settings that come from the environment.

Kept apart from settings.py so the same parsing (and its error messages)
serves settings, the Celery app and the scripts.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:  # progress.store.shards reads Django settings: not imported while they load
    from progress.store.shards import HostEntry, SentinelHost

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
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
    raw = os.environ.get(name)
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
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


# -- Redis servers: one URL, several shards, or Sentinel masters ----------------

REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")
SENTINEL_TIMEOUT = 0.5  # seconds a sentinel may take to answer before the next is asked


def env_redis_shards(default_url: str) -> list[HostEntry]:
    """The Redis servers every TaskPulse part uses, as channels_redis host entries.

    REDIS_URL (one server, the default), REDIS_SHARD_URLS (several), or
    REDIS_SENTINELS + REDIS_SENTINEL_MASTER (one master, or several: one shard
    each). Exactly one of the three forms; anything else is refused here.
    """
    url = os.environ.get("REDIS_URL", "").strip()
    shard_urls = env_list("REDIS_SHARD_URLS", [])
    sentinels = env_list("REDIS_SENTINELS", [])
    masters = env_list("REDIS_SENTINEL_MASTER", [])
    if sentinels or masters:
        if shard_urls:
            raise ImproperlyConfigured(
                "REDIS_SHARD_URLS and REDIS_SENTINELS exclude each other: to shard over "
                "Sentinel masters, list them in REDIS_SENTINEL_MASTER=shard-a,shard-b")
        hosts = _sentinel_hosts(sentinels, masters)
        _refuse_redis_url(url, "REDIS_SENTINELS")
        return hosts
    for name in ("REDIS_SENTINEL_PASSWORD", "REDIS_PASSWORD"):
        if os.environ.get(name):
            raise ImproperlyConfigured(
                f"{name} is for Sentinel masters (REDIS_SENTINELS); without Sentinel put the "
                "password in the URL: redis://:password@host:6379/0")
    if shard_urls:
        if url and url != shard_urls[0]:
            _refuse_redis_url(url, "REDIS_SHARD_URLS")
        _check_unique("REDIS_SHARD_URLS", shard_urls)
        for shard_url in shard_urls:
            _check_redis_url("REDIS_SHARD_URLS", shard_url)
        return list(shard_urls)
    url = url or default_url
    _check_redis_url("REDIS_URL", url)
    return [url]


def _refuse_redis_url(url: str, instead: str) -> None:
    if url:
        raise ImproperlyConfigured(
            f"REDIS_URL={url!r} and {instead} are both set: {instead} replaces REDIS_URL "
            "(Celery then uses the first shard unless CELERY_BROKER_URL is set); unset REDIS_URL")


def _check_redis_url(name: str, url: str) -> None:
    if not url.startswith(REDIS_URL_SCHEMES):
        raise ImproperlyConfigured(
            f"{name}: {url!r} is not a Redis URL; use one of: "
            + ", ".join(f"{scheme}..." for scheme in REDIS_URL_SCHEMES))


def _check_unique(name: str, items: list[str]) -> None:
    repeated = sorted({item for item in items if items.count(item) > 1})
    if repeated:
        raise ImproperlyConfigured(f"{name} lists {', '.join(repeated)} more than once")


def _sentinel_hosts(sentinels: list[str], masters: list[str]) -> list[HostEntry]:
    if not sentinels:
        raise ImproperlyConfigured(
            "REDIS_SENTINEL_MASTER needs REDIS_SENTINELS, the sentinels' addresses: "
            "REDIS_SENTINELS=sentinel-1:26379,sentinel-2:26379")
    if not masters:
        raise ImproperlyConfigured(
            "REDIS_SENTINELS needs REDIS_SENTINEL_MASTER, the master's name the sentinels "
            "monitor (several names, comma-separated, shard over several masters)")
    _check_unique("REDIS_SENTINELS", sentinels)
    _check_unique("REDIS_SENTINEL_MASTER", masters)
    addresses = [_host_port("REDIS_SENTINELS", item) for item in sentinels]
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": SENTINEL_TIMEOUT}
    sentinel_password = os.environ.get("REDIS_SENTINEL_PASSWORD", "")
    if sentinel_password:
        sentinel_kwargs["password"] = sentinel_password
    password = os.environ.get("REDIS_PASSWORD", "")
    hosts: list[HostEntry] = []
    for master in masters:
        host: SentinelHost = {"master_name": master, "sentinels": list(addresses),
                              "sentinel_kwargs": dict(sentinel_kwargs)}
        if password:
            host["password"] = password
        hosts.append(host)
    return hosts


def _host_port(name: str, item: str) -> tuple[str, int]:
    host, colon, port = item.rpartition(":")
    host = host.strip("[]")  # an IPv6 address: [::1]:26379
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ImproperlyConfigured(
            f"{name}: {item!r} is not host:port (e.g. sentinel-1:26379); "
            "separate several with commas")
    return host, int(port)


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
