"""Who the client is, for per-client limits: the peer's address, or the address a
trusted reverse proxy (PROGRESS_TRUSTED_PROXIES) names in X-Forwarded-For.

A header from a peer that is not a trusted proxy is ignored: anyone can send
one, and believing it would let a client pick a fresh address per request.
"""

from __future__ import annotations

from progress import conf

UNKNOWN_CLIENT = "unknown"


def client_address(peer: str | None, forwarded_for: str | None) -> str:
    """The client's address from the peer address and an X-Forwarded-For value."""
    if not peer:
        return UNKNOWN_CLIENT
    proxies = conf.trusted_proxies()
    if not forwarded_for or peer not in proxies:
        return peer
    # Walk from the nearest hop back past our own proxies: the first other one is the client.
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        if hop not in proxies:
            return hop
    return peer
