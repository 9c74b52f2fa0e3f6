"""TaskPulse's own channel-layer alias, so a host's CHANNEL_LAYERS stay untouched.

When the host's settings do not define the alias (TASKPULSE_CHANNEL_LAYER,
"taskpulse" by default), TaskPulse registers its pub/sub layer under it with
Channels' public `channel_layers.set()`, on TaskPulse's Redis servers and key
prefix, so the record script's PUBLISH reaches the layer's subscriptions.
"""

from __future__ import annotations

import threading
from typing import Any

from channels.layers import channel_layers
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from progress import conf
from progress.store import shards

BACKEND = "consumers.layer.ResyncingPubSubChannelLayer"

_lock = threading.Lock()


def layer_config() -> dict[str, Any]:
    """The layer TaskPulse configures for itself (what a host would write to define it)."""
    return {"BACKEND": BACKEND,
            "CONFIG": {"hosts": shards.servers(), "prefix": conf.key_prefix()}}


# Layer options the record script cannot honour: it publishes each event as plain
# msgpack from inside Redis (progress/store/lua.py), where no Python code can
# encrypt it or write another format. A layer configured with either would fail to
# decode every event, so it is refused at start-up instead.
UNSUPPORTED_OPTIONS = {
    "symmetric_encryption_keys": "the record script publishes events from inside Redis, "
    "where they cannot be encrypted (records are stored there in clear anyway): protect "
    "Redis itself with AUTH and TLS (rediss://) instead",
    "serializer_format": "the record script publishes msgpack",
}


def check_layer_config(alias: str | None = None) -> None:
    """Refuse a host-configured TaskPulse layer with options it cannot honour."""
    alias = alias or conf.channel_layer_alias()
    config = getattr(settings, "CHANNEL_LAYERS", {}).get(alias, {}).get("CONFIG", {})
    for option, why in UNSUPPORTED_OPTIONS.items():
        value = config.get(option)
        if value and not (option == "serializer_format" and value == "msgpack"):
            raise ImproperlyConfigured(
                f"CHANNEL_LAYERS[{alias!r}] sets {option}, which TaskPulse's channel layer "
                f"does not support: {why}. Remove it (TaskPulse's layer is separate from "
                "the site's own channel layers, which may keep it).")


def ensure_alias() -> str:
    """TaskPulse's alias, with its layer registered in Channels when the host did not
    configure one; Channels forgets registered layers when settings change (tests)."""
    alias = conf.channel_layer_alias()
    if alias in getattr(settings, "CHANNEL_LAYERS", {}) or alias in channel_layers.backends:
        return alias
    with _lock:
        if alias not in channel_layers.backends:
            config = layer_config()
            channel_layers.set(alias, import_string(config["BACKEND"])(**config["CONFIG"]))
    return alias
