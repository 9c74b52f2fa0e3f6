"""The client address of a WebSocket connection, for per-client limits; and, under
the launcher's --proxy-headers, which X-Forwarded-For entry names the peer."""

from __future__ import annotations

from typing import Any

from progress.control.clients import client_address

FORWARDED_FOR = b"x-forwarded-for"


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    """A header's value in an ASGI scope (names are lower case there), repeated
    lines joined as one list (RFC 9110, 5.3)."""
    values = [value.decode("latin1") for key, value in scope.get("headers", ()) if key == name]
    return ",".join(values) if values else None


def client_of_scope(scope: dict[str, Any]) -> str:
    """The peer's address, or the one a trusted proxy names (TASKPULSE_TRUSTED_PROXIES)."""
    peer = (scope.get("client") or (None,))[0]
    return client_address(peer, _header(scope, FORWARDED_FOR))


def believe_nearest_hop(scope: dict[str, Any], header: str) -> None:
    """Under daphne's --proxy-headers: make the scope's client the address the proxy
    in front appended to `header` (its last entry). daphne takes the first entry,
    which is whatever the client itself sent (`X-Forwarded-For: 1.2.3.4`), so each
    request could pick its own address and with it a fresh rate limit."""
    value = _header(scope, header.lower().encode("latin1"))
    hops = [hop.strip() for hop in (value or "").split(",") if hop.strip()]
    if hops:
        port = (scope.get("client") or (None, 0))[1]
        scope["client"] = [hops[-1], port]
