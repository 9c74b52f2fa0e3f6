"""A TaskPulse channel layer configured with options the record script cannot honour
(channels_redis' `symmetric_encryption_keys`, another `serializer_format`) is refused
when the site builds its WebSocket application, with a message that says what to do;
before, every event failed to decrypt in the web process and watchers saw nothing."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from consumers.channel_layer import BACKEND
from consumers.routing import websocket_application


def layer(**config: object) -> dict[str, object]:
    return {"taskpulse": {"BACKEND": BACKEND, "CONFIG": {"hosts": ["redis://127.0.0.1"],
                                                         **config}}}


def test_encryption_keys_are_refused_at_start_up() -> None:
    with override_settings(CHANNEL_LAYERS=layer(symmetric_encryption_keys=["k" * 40])), \
            pytest.raises(ImproperlyConfigured) as refused:
        websocket_application()
    message = str(refused.value)
    assert "symmetric_encryption_keys" in message and "TLS" in message


def test_another_serializer_is_refused() -> None:
    with override_settings(CHANNEL_LAYERS=layer(serializer_format="json")), \
            pytest.raises(ImproperlyConfigured, match="msgpack"):
        websocket_application()


def test_the_site_s_own_layers_may_keep_them() -> None:
    """Only TaskPulse's alias is checked: the host's default layer is its own business."""
    host_layers = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                               "CONFIG": {"symmetric_encryption_keys": ["k" * 40]}},
                   **layer(serializer_format="msgpack")}
    with override_settings(CHANNEL_LAYERS=host_layers):
        assert websocket_application() is not None
