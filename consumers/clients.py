"""The client address of a WebSocket connection, for per-client limits."""

from __future__ import annotations

from typing import Any

from progress.control.clients import client_address

FORWARDED_FOR = b"x-forwarded-for"


def client_of_scope(scope: dict[str, Any]) -> str:
    """The peer's address, or the one a trusted proxy names (PROGRESS_TRUSTED_PROXIES)."""
    peer = (scope.get("client") or (None,))[0]
    forwarded = next((value.decode("latin1") for name, value in scope.get("headers", ())
                      if name == FORWARDED_FOR), None)
    return client_address(peer, forwarded)
