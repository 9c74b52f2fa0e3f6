"""Handshake origin check (PROTOCOL.md §4 Handshake), by progress/web/origins.py's
rule (shared with the Server-Sent Events endpoint). A client that sends no Origin
is let through; Channels' own validator refuses those.
"""

from typing import Any

from channels.security.websocket import WebsocketDenier

from consumers.clients import client_of_scope
from progress import conf
from progress.control.refusals import Refusal, log_refusal, shown
from progress.web.origins import ORIGINS_HINT, origin_allowed

__all__ = ["AllowedOriginValidator", "origin_allowed"]  # origin_allowed: for the tests


class AllowedOriginValidator:
    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        origin = next((v for k, v in scope.get("headers", []) if k == b"origin"), None)
        if origin_allowed(origin):
            return await self.application(scope, receive, send)
        sent = (origin or b"").decode("latin1")
        log_refusal(Refusal.ORIGIN, client_of_scope(scope),
                    f"origin {shown(sent)} is not in the allowed origins "
                    f"{conf.allowed_origins()} {ORIGINS_HINT}")
        return await WebsocketDenier()(scope, receive, send)
