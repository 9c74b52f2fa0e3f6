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
from django.utils.module_loading import import_string

from progress import conf
from progress.store import shards

BACKEND = "consumers.layer.ResyncingPubSubChannelLayer"

_lock = threading.Lock()


def layer_config() -> dict[str, Any]:
    """The layer TaskPulse configures for itself (what a host would write to define it)."""
    return {"BACKEND": BACKEND,
            "CONFIG": {"hosts": shards.servers(), "prefix": conf.key_prefix()}}


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
