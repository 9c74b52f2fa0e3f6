"""Which Redis servers TaskPulse uses: one URL, several shards, or Sentinel masters.

Each value is read from the Django setting `TASKPULSE_<NAME>` when the host
defines it, else from the environment variable `<NAME>` (REDIS_URL, ...), else
the default (one local server). Exactly one of the three forms; a malformed
or conflicting value is refused here with what to do instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypedDict

from django.core.exceptions import ImproperlyConfigured

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
SETTING_PREFIX = "TASKPULSE_"
# The names, without the setting prefix (they are the environment variables).
NAMES = ("REDIS_URL", "REDIS_SHARD_URLS", "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER",
         "REDIS_PASSWORD", "REDIS_SENTINEL_PASSWORD")
REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")
SENTINEL_TIMEOUT = 0.5  # seconds a sentinel may take to answer before the next is asked


class SentinelHost(TypedDict, total=False):
    """A shard behind Redis Sentinel, as channels_redis' create_pool() takes it."""

    master_name: str
    sentinels: list[tuple[str, int]]
    sentinel_kwargs: dict[str, Any]
    password: str


HostEntry = str | SentinelHost  # a redis:// URL, or a Sentinel master
Reader = Callable[[str], "str | list[str] | None"]


def from_environment(name: str) -> str | None:
    return os.environ.get(name)


def from_settings_or_environment(name: str) -> str | list[str] | None:
    from django.conf import settings

    value: str | list[str] | None = getattr(settings, SETTING_PREFIX + name, None)
    return value if value is not None else os.environ.get(name)


def resolve(read: Reader = from_settings_or_environment,
            default_url: str = DEFAULT_REDIS_URL) -> list[HostEntry]:
    """The Redis servers, as channels_redis host entries, from the values `read` gives."""
    url = _text(read("REDIS_URL"))
    shard_urls = _items(read("REDIS_SHARD_URLS"))
    sentinels = _items(read("REDIS_SENTINELS"))
    masters = _items(read("REDIS_SENTINEL_MASTER"))
    password, sentinel_password = _text(read("REDIS_PASSWORD")), _text(
        read("REDIS_SENTINEL_PASSWORD"))
    if sentinels or masters:
        if shard_urls:
            raise ImproperlyConfigured(
                "REDIS_SHARD_URLS and REDIS_SENTINELS exclude each other: to shard over "
                "Sentinel masters, list them in REDIS_SENTINEL_MASTER=shard-a,shard-b")
        hosts = _sentinel_hosts(sentinels, masters, password, sentinel_password)
        _refuse_redis_url(url, "REDIS_SENTINELS")
        return hosts
    for name, value in (("REDIS_SENTINEL_PASSWORD", sentinel_password),
                        ("REDIS_PASSWORD", password)):
        if value:
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


def _text(value: str | list[str] | None) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    return (value or "").strip()


def _items(value: str | list[str] | None) -> list[str]:
    raw = value.split(",") if isinstance(value, str) else list(value or [])
    return [str(item).strip() for item in raw if str(item).strip()]


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


def _sentinel_hosts(sentinels: list[str], masters: list[str], password: str,
                    sentinel_password: str) -> list[HostEntry]:
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
    if sentinel_password:
        sentinel_kwargs["password"] = sentinel_password
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
