"""Settings come from the environment; production mode refuses insecure ones."""

import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from consumers.origin import origin_allowed
from tests.processes import ROOT

STRONG_KEY = "k" * 50


def import_settings(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-c", "import project.settings as s; print(s.DEBUG, s.ALLOWED_HOSTS)"],
        cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60,
    )


def test_development_mode_is_asked_for() -> None:
    """DJANGO_DEBUG=1 loads in debug mode with the development key and local hosts."""
    done = import_settings(DJANGO_DEBUG="1")
    assert done.returncode == 0, done.stderr
    assert "True" in done.stdout and "127.0.0.1" in done.stdout


@pytest.mark.parametrize("debug", [None, "0"])
def test_production_is_the_default_and_needs_a_key(debug: str | None) -> None:
    """With nothing set (or DJANGO_DEBUG=0) a missing key is a start-up error saying how
    to set one: no debug pages, no published signing key."""
    done = import_settings(**({"DJANGO_DEBUG": debug} if debug else {}))
    assert done.returncode != 0
    assert "DJANGO_SECRET_KEY" in done.stderr and "secrets.token_urlsafe" in done.stderr
    assert "DJANGO_DEBUG=1" in done.stderr


def test_production_refuses_the_development_key() -> None:
    """The published development key is refused outside development mode."""
    from project.settings import DEV_SECRET_KEY

    done = import_settings(DJANGO_SECRET_KEY=DEV_SECRET_KEY)
    assert done.returncode != 0 and "DJANGO_SECRET_KEY" in done.stderr


def test_tracebacks_to_browsers_are_refused_in_production() -> None:
    """TASKPULSE_SEND_TRACEBACK=1 is a start-up error outside development mode."""
    done = import_settings(DJANGO_SECRET_KEY=STRONG_KEY, TASKPULSE_SEND_TRACEBACK="1")
    assert done.returncode != 0 and "TASKPULSE_SEND_TRACEBACK" in done.stderr
    assert import_settings(DJANGO_DEBUG="1", TASKPULSE_SEND_TRACEBACK="1").returncode == 0


def test_production_refuses_wildcard_hosts() -> None:
    """DJANGO_DEBUG=0 refuses DJANGO_ALLOWED_HOSTS='*'."""
    done = import_settings(DJANGO_DEBUG="0", DJANGO_SECRET_KEY=STRONG_KEY,
                           DJANGO_ALLOWED_HOSTS="*")
    assert done.returncode != 0 and "DJANGO_ALLOWED_HOSTS" in done.stderr


def test_production_with_secure_settings_starts() -> None:
    """A real key and explicit hosts are accepted in production mode."""
    done = import_settings(DJANGO_DEBUG="0", DJANGO_SECRET_KEY=STRONG_KEY,
                           DJANGO_ALLOWED_HOSTS="progress.example.com")
    assert done.returncode == 0, done.stderr
    assert "False" in done.stdout and "progress.example.com" in done.stdout


def manage_check(**env: str) -> subprocess.CompletedProcess[str]:
    """`manage.py check` in production mode with a strong SECRET_KEY, plus `env`."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("DJANGO_", "TASKPULSE_TOKEN_KEY"))}
    clean.update(DJANGO_DEBUG="0", DJANGO_SECRET_KEY=STRONG_KEY,
                 DJANGO_ALLOWED_HOSTS="progress.example.com")
    clean.update(env)
    return subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=clean,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("key", ["a", "k" * 31])
def test_production_refuses_a_weak_token_key(key: str) -> None:
    """With DEBUG off, a TASKPULSE_TOKEN_KEY shorter than SECRET_KEY's minimum is a
    start-up error saying how to make one."""
    done = manage_check(TASKPULSE_TOKEN_KEY=key)
    assert done.returncode != 0
    assert "TASKPULSE_TOKEN_KEY must be a random value of at least 32" in done.stderr
    assert "secrets.token_urlsafe" in done.stderr


def test_a_strong_token_key_or_development_mode_starts() -> None:
    """A 32-character token key passes `check` in production; any key in development."""
    done = manage_check(TASKPULSE_TOKEN_KEY="k" * 32)
    assert done.returncode == 0, done.stderr
    assert "no issues" in done.stdout
    assert manage_check(DJANGO_DEBUG="1", TASKPULSE_TOKEN_KEY="a").returncode == 0


def test_a_weak_fallback_token_key_is_refused() -> None:
    """An old key kept for rotation verifies tokens too: a weak one is refused as well."""
    from django.test import override_settings

    from progress.key_strength import check_token_keys

    weak = override_settings(DEBUG=False, TASKPULSE_TOKEN_KEY="k" * 50,
                             TASKPULSE_TOKEN_KEY_FALLBACKS=["k" * 50, "old"])
    with weak, pytest.raises(ImproperlyConfigured, match=r"TASKPULSE_TOKEN_KEY_FALLBACKS\[1\]"):
        check_token_keys()


def test_bad_boolean_is_a_clear_error() -> None:
    """DJANGO_DEBUG=maybe names the accepted values."""
    done = import_settings(DJANGO_DEBUG="maybe")
    assert done.returncode != 0 and "not a boolean" in done.stderr


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),
        (b"http://localhost:8000", True),
        (b"http://127.0.0.1:8000", True),
        (b"http://[::1]:8000", True),
        (b"http://evil.example.com", False),
        (b"http://localhost.evil.com", False),
        (b"null", False),
        (b"http://[bad", False),
    ],
)
def test_origin_check_uses_allowed_hosts(origin: bytes | None, allowed: bool) -> None:
    """Browser origins must be in ALLOWED_HOSTS; clients without Origin pass."""
    assert origin_allowed(origin) is allowed


# -- Redis servers: REDIS_URL, REDIS_SHARD_URLS, REDIS_SENTINELS ------------------

REDIS_ENV = ("REDIS_URL", "REDIS_SHARD_URLS", "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER",
             "REDIS_PASSWORD", "REDIS_SENTINEL_PASSWORD", "CELERY_BROKER_URL",
             "CELERY_RESULT_BACKEND")
SHOW_REDIS = """
import json, django
django.setup()
from django.conf import settings as s
from consumers.channel_layer import layer_config
from progress.store.shards import servers
print(json.dumps({
    "shards": servers(), "layer": layer_config()["CONFIG"]["hosts"],
    "broker": s.CELERY_BROKER_URL, "backend": s.CELERY_RESULT_BACKEND,
    "broker_options": getattr(s, "CELERY_BROKER_TRANSPORT_OPTIONS", None),
    "backend_options": getattr(s, "CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS", None)}))
"""


def redis_settings(**env: str) -> dict[str, Any]:
    """The Redis-related settings a process started with `env` gets."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("DJANGO_") and k not in REDIS_ENV}
    clean.update(DJANGO_DEBUG="1", DJANGO_SETTINGS_MODULE="project.settings")
    done = subprocess.run([sys.executable, "-c", SHOW_REDIS], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout)
    return found


@pytest.fixture
def redis_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No Redis setting from the developer's environment."""
    for name in REDIS_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_one_redis_url_serves_everything_by_default() -> None:
    """With no Redis setting, one local server is the only shard, the layer's host and Celery's."""
    found = redis_settings()
    url = "redis://127.0.0.1:6379/0"
    assert found["shards"] == found["layer"] == [url]
    assert found["broker"] == found["backend"] == url
    assert found["broker_options"] is None and found["backend_options"] is None


def test_shard_urls_feed_the_layer_in_order_and_celery_uses_the_first() -> None:
    """REDIS_SHARD_URLS become the shards and the layer's hosts, in order; Celery the first."""
    urls = ["redis://r2:6379/0", "redis://r1:6379/1"]
    found = redis_settings(REDIS_SHARD_URLS=",".join(urls))
    assert found["shards"] == found["layer"] == urls
    assert found["broker"] == found["backend"] == urls[0]


def test_sentinel_configures_layer_store_and_celery() -> None:
    """REDIS_SENTINELS + REDIS_SENTINEL_MASTER give a Sentinel host entry to the layer and
    the store, and Celery's sentinel:// transport with the master's name."""
    found = redis_settings(REDIS_SENTINELS="s1:26379, s2:26380", REDIS_SENTINEL_MASTER="tp",
                           REDIS_PASSWORD="p/w", REDIS_SENTINEL_PASSWORD="sp")
    [host] = found["shards"]
    assert found["layer"] == [host]
    assert host == {"master_name": "tp", "sentinels": [["s1", 26379], ["s2", 26380]],
                    "sentinel_kwargs": {"socket_timeout": 0.5, "password": "sp"},
                    "password": "p/w"}
    assert found["broker"] == found["backend"] == (
        "sentinel://:p%2Fw@s1:26379/0;sentinel://:p%2Fw@s2:26380/0")
    options = {"master_name": "tp", "sentinel_kwargs": {"socket_timeout": 0.5, "password": "sp"}}
    assert found["broker_options"] == found["backend_options"] == options


def test_sentinel_masters_are_shards_and_an_explicit_broker_wins() -> None:
    """Several master names are several shards; CELERY_BROKER_URL replaces the Sentinel broker."""
    found = redis_settings(REDIS_SENTINELS="s1:26379", REDIS_SENTINEL_MASTER="a,b",
                           CELERY_BROKER_URL="amqp://guest@mq//")
    assert [h["master_name"] for h in found["shards"]] == ["a", "b"]
    assert found["broker"] == "amqp://guest@mq//" and found["broker_options"] is None
    assert found["backend"].startswith("sentinel://s1:26379/0")
    assert found["backend_options"]["master_name"] == "a"


@pytest.mark.parametrize(("env", "message"), [
    ({"REDIS_SENTINELS": "sentinel-1", "REDIS_SENTINEL_MASTER": "tp"}, "not host:port"),
    ({"REDIS_SENTINELS": "s1:99999", "REDIS_SENTINEL_MASTER": "tp"}, "not host:port"),
    ({"REDIS_SENTINELS": "s1:26379"}, "needs REDIS_SENTINEL_MASTER"),
    ({"REDIS_SENTINEL_MASTER": "tp"}, "needs REDIS_SENTINELS"),
    ({"REDIS_SENTINELS": "s1:1,s1:1", "REDIS_SENTINEL_MASTER": "tp"}, "more than once"),
    ({"REDIS_SENTINELS": "s1:1", "REDIS_SENTINEL_MASTER": "tp", "REDIS_URL": "redis://x"},
     "unset REDIS_URL"),
    ({"REDIS_SENTINELS": "s1:1", "REDIS_SENTINEL_MASTER": "tp",
      "REDIS_SHARD_URLS": "redis://a,redis://b"}, "REDIS_SENTINEL_MASTER=shard-a,shard-b"),
    ({"REDIS_SHARD_URLS": "redis://a,http://b"}, "not a Redis URL"),
    ({"REDIS_SHARD_URLS": "redis://a,redis://a"}, "more than once"),
    ({"REDIS_SHARD_URLS": "redis://a,redis://b", "REDIS_URL": "redis://b"}, "unset REDIS_URL"),
    ({"REDIS_URL": "localhost:6379"}, "not a Redis URL"),
    ({"REDIS_PASSWORD": "pw"}, "put the password in the URL"),
])
def test_bad_redis_settings_are_clear_errors(redis_env: pytest.MonkeyPatch,
                                             env: dict[str, str], message: str) -> None:
    """Each malformed or conflicting Redis setting is refused, saying what to do instead."""
    from django.core.exceptions import ImproperlyConfigured

    from project.env import env_redis_shards

    for name, value in env.items():
        redis_env.setenv(name, value)
    with pytest.raises(ImproperlyConfigured, match=re.escape(message)):
        env_redis_shards("redis://127.0.0.1:6379/0")


def test_shard_urls_may_repeat_redis_url_as_the_first(redis_env: pytest.MonkeyPatch) -> None:
    """A REDIS_URL left equal to the first shard is accepted."""
    from project.env import env_redis_shards

    redis_env.setenv("REDIS_URL", "redis://a:6379/0")
    redis_env.setenv("REDIS_SHARD_URLS", "redis://a:6379/0,redis://b:6379/0")
    assert env_redis_shards("redis://127.0.0.1:6379/0") == ["redis://a:6379/0",
                                                            "redis://b:6379/0"]


def test_production_refuses_a_malformed_sentinel_list_at_startup() -> None:
    """DJANGO_DEBUG=0 with a malformed REDIS_SENTINELS fails to start, naming the setting."""
    done = import_settings(DJANGO_DEBUG="0", DJANGO_SECRET_KEY=STRONG_KEY,
                           DJANGO_ALLOWED_HOSTS="progress.example.com",
                           REDIS_SENTINELS="sentinel-1;sentinel-2", REDIS_SENTINEL_MASTER="tp")
    assert done.returncode != 0
    assert "REDIS_SENTINELS" in done.stderr and "host:port" in done.stderr
