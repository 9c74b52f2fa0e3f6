"""Caps on open WebSockets, checked before a connection costs anything more:
per server process (TASKPULSE_MAX_SOCKETS, closed with 4013 "try again later")
and per client address (TASKPULSE_MAX_SOCKETS_PER_CLIENT, closed with 4029),
on every server alike.

The per-client table holds only addresses with an open socket, so its size is
bounded by the process cap whatever clients do.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from consumers.clients import client_of_scope
from progress import conf
from progress.wire import close_codes

ASGIApp = Any


class SocketLimits:
    """ASGI middleware for the "websocket" scope: refuse sockets over the caps."""

    def __init__(self, application: ASGIApp) -> None:
        self.application = application
        self.open = 0
        self.per_client: Counter[str] = Counter()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope.get("type") != "websocket":
            return await self.application(scope, receive, send)
        client = client_of_scope(scope)
        refused = self._refusal(client)
        if refused is not None:
            return await _refuse(scope, receive, send, refused)
        self.open += 1
        self.per_client[client] += 1
        try:
            return await self.application(scope, receive, send)
        finally:
            self.open -= 1
            self.per_client[client] -= 1
            if self.per_client[client] <= 0:
                del self.per_client[client]

    def _refusal(self, client: str) -> int | None:
        """The close code that refuses a new socket from `client`, or None to admit it."""
        if self.open >= conf.max_sockets():
            return close_codes.TRY_AGAIN_LATER
        per_client = conf.max_sockets_per_client()
        if per_client and self.per_client[client] >= per_client:
            return close_codes.TOO_MANY_SOCKETS
        return None


async def _refuse(scope: dict[str, Any], receive: Any, send: Any, code: int) -> None:
    message = await receive()
    if message.get("type") != "websocket.connect":
        return
    # Accept, then close with the code at once: a close code reaches the
    # browser's WebSocket API, an HTTP refusal only shows as 1006. The codes are
    # 4xxx (PROTOCOL.md §4), which every server sends through its public API.
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": code})
