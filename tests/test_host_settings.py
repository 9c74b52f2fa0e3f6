"""Settings a host site lives with: TaskPulse's Redis, its own channel-layer alias,
its own token key and browser origins, each from Django settings first."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from channels.layers import channel_layers, get_channel_layer
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from consumers.channel_layer import BACKEND, ensure_alias
from consumers.origin import origin_allowed
from progress.store import servers, shards
from progress.tokens import TokenError, issue_token, verify_token

HOST_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture
def no_redis_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in servers.NAMES:
        monkeypatch.delenv(name, raising=False)
    shards.forget_servers()
    yield monkeypatch
    shards.forget_servers()


def test_redis_defaults_to_one_local_server(no_redis_env: pytest.MonkeyPatch) -> None:
    """With no setting and no environment, TaskPulse uses redis://127.0.0.1:6379/0."""
    assert servers.resolve() == ["redis://127.0.0.1:6379/0"]


def test_environment_redis_url_is_the_fallback(no_redis_env: pytest.MonkeyPatch) -> None:
    """REDIS_URL from the environment is used when the host sets no TASKPULSE_REDIS_URL."""
    no_redis_env.setenv("REDIS_URL", "redis://env-host:6379/2")
    assert servers.resolve() == ["redis://env-host:6379/2"]


def test_django_setting_wins_over_the_environment(no_redis_env: pytest.MonkeyPatch) -> None:
    """TASKPULSE_REDIS_URL in settings is preferred to the environment's REDIS_URL."""
    no_redis_env.setenv("REDIS_URL", "redis://env-host:6379/2")
    with override_settings(TASKPULSE_REDIS_URL="redis://setting-host:6379/3"):
        assert servers.resolve() == ["redis://setting-host:6379/3"]
        assert shards.servers() == ["redis://setting-host:6379/3"]


def test_shards_and_sentinels_come_from_settings_too(no_redis_env: pytest.MonkeyPatch) -> None:
    """TASKPULSE_REDIS_SHARD_URLS (a list) and TASKPULSE_REDIS_SENTINELS are read likewise."""
    with override_settings(TASKPULSE_REDIS_SHARD_URLS=["redis://a:1/0", "redis://b:1/0"]):
        assert servers.resolve() == ["redis://a:1/0", "redis://b:1/0"]
    with override_settings(TASKPULSE_REDIS_SENTINELS="s1:26379",
                           TASKPULSE_REDIS_SENTINEL_MASTER="main"):
        [host] = servers.resolve()
        assert not isinstance(host, str) and host["master_name"] == "main"


def test_a_bad_setting_is_a_clear_error(no_redis_env: pytest.MonkeyPatch) -> None:
    """A Redis setting that is not a Redis URL is refused, naming the accepted schemes."""
    with override_settings(TASKPULSE_REDIS_URL="localhost:6379"), \
            pytest.raises(ImproperlyConfigured, match="not a Redis URL"):
        servers.resolve()


def test_own_layer_alias_leaves_the_host_layers_alone() -> None:
    """The host's CHANNEL_LAYERS (its "default") stay as they are; TaskPulse registers
    its pub/sub layer under its own alias."""
    with override_settings(CHANNEL_LAYERS=HOST_LAYERS):
        channel_layers.backends.clear()
        alias = ensure_alias()
        assert alias == "taskpulse"
        ours = get_channel_layer(alias)
        assert f"{type(ours).__module__}.{type(ours).__qualname__}" == BACKEND
        assert type(get_channel_layer()).__name__ == "InMemoryChannelLayer"
        from django.conf import settings

        assert getattr(settings, "CHANNEL_LAYERS") == HOST_LAYERS  # noqa: B009 (not written to)
    channel_layers.backends.clear()


def test_host_defined_alias_must_agree_with_the_servers() -> None:
    """A host that defines TaskPulse's alias on other servers is told how to fix it."""
    layer = {"BACKEND": BACKEND, "CONFIG": {"hosts": ["redis://elsewhere:6379/0"]}}
    with override_settings(CHANNEL_LAYERS={"taskpulse": layer}), \
            pytest.raises(ImproperlyConfigured, match="leave the alias out"):
        shards.servers()


def test_tokens_use_the_shared_key_not_the_secret_key() -> None:
    """With TASKPULSE_TOKEN_KEY, a site with another SECRET_KEY but the same token key
    accepts the token; a site without the key refuses it."""
    with override_settings(TASKPULSE_TOKEN_KEY="shared-token-key-" * 3,
                           SECRET_KEY="host-secret-key-" * 3):
        token = issue_token("t-shared")
    with override_settings(TASKPULSE_TOKEN_KEY="shared-token-key-" * 3,
                           SECRET_KEY="status-server-secret-" * 3):
        assert verify_token(token, "t-shared").task_id == "t-shared"
    with override_settings(SECRET_KEY="host-secret-key-" * 3), \
            pytest.raises(TokenError, match="invalid"):
        verify_token(token, "t-shared")


def test_allowed_origins_default_to_allowed_hosts() -> None:
    """Browser origins are checked against TASKPULSE_ALLOWED_ORIGINS, else ALLOWED_HOSTS."""
    with override_settings(ALLOWED_HOSTS=["app.example.com"], TASKPULSE_ALLOWED_ORIGINS=None):
        assert origin_allowed(b"https://app.example.com")
        assert not origin_allowed(b"https://status.example.com")
    with override_settings(ALLOWED_HOSTS=["status.example.com"],
                           TASKPULSE_ALLOWED_ORIGINS=["app.example.com"]):
        assert origin_allowed(b"https://app.example.com")
        assert not origin_allowed(b"https://status.example.com")


def test_a_fresh_debug_site_accepts_its_own_local_pages() -> None:
    """DEBUG with an empty ALLOWED_HOSTS (a new startproject site) allows the local names
    Django itself serves then, and nothing else."""
    with override_settings(DEBUG=True, ALLOWED_HOSTS=[], TASKPULSE_ALLOWED_ORIGINS=None):
        assert origin_allowed(b"http://127.0.0.1:8000")
        assert origin_allowed(b"http://localhost:8000")
        assert not origin_allowed(b"https://evil.example")
    with override_settings(DEBUG=False, ALLOWED_HOSTS=[], TASKPULSE_ALLOWED_ORIGINS=None):
        assert not origin_allowed(b"http://127.0.0.1:8000")
