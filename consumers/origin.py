"""Handshake origin check (PROTOCOL.md §4 Handshake).

A browser's `Origin` host must be in TASKPULSE_ALLOWED_ORIGINS (by default
ALLOWED_HOSTS); a client that
sends no Origin (scripts, servers) is let through, since every
subscription still needs a token. Channels' own validator refuses those.
"""

from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.http.request import validate_host

from progress import conf


def origin_allowed(origin: bytes | None) -> bool:
    if origin is None:
        return True
    try:
        host = urlsplit(origin.decode("latin1")).hostname
    except ValueError:
        return False
    if not host:
        return False
    if ":" in host:  # urlsplit drops an IPv6 literal's brackets; ALLOWED_HOSTS keeps them
        host = f"[{host}]"
    return validate_host(host, conf.allowed_origins())


class AllowedOriginValidator:
    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        origin = next((v for k, v in scope.get("headers", []) if k == b"origin"), None)
        if origin_allowed(origin):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)
