"""Who the client is, for per-client limits (rate limits, socket caps): the peer's
address, or the address a trusted reverse proxy (TASKPULSE_TRUSTED_PROXIES) names in
X-Forwarded-For; an IPv6 client by its network (TASKPULSE_IPV6_PREFIX, a /64).

A header from a peer that is not a trusted proxy is ignored: anyone can send
one, and believing it would let a client pick a fresh address per request. An
IPv6 host holds a whole /64 as cheaply as one address, hence the prefix.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import threading
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured

from progress import conf

logger = logging.getLogger(__name__)

UNKNOWN_CLIENT = "unknown"
# In TASKPULSE_TRUSTED_PROXIES: a peer with no address, i.e. a proxy on a Unix socket.
UNIX_PEER = "unix"
# A client name that is no address (a proxy's own notation) is kept to this length.
MAX_NAME_CHARS = 100
# Requests carrying X-Forwarded-For from one untrusted private peer, and nothing
# else, before the misconfiguration is logged (once).
LONE_PROXY_REQUESTS = 50

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    networks: tuple[Network, ...]
    unix: bool

    def trust(self, peer: Address | None) -> bool:
        """Whether a peer (None: one with no address) is one of our proxies."""
        if peer is None:
            return self.unix
        return any(peer in network for network in self.networks)


@functools.lru_cache(maxsize=8)
def parse_trusted(entries: frozenset[str]) -> TrustedProxies:
    """TASKPULSE_TRUSTED_PROXIES read: addresses, networks and "unix"."""
    networks: list[Network] = []
    unix = False
    for entry in entries:
        if entry.strip().lower() == UNIX_PEER:
            unix = True
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ImproperlyConfigured(
                f"TASKPULSE_TRUSTED_PROXIES: {entry!r} is not an address (10.0.0.2), a network "
                f'(10.0.0.0/8, fd00::/8) or "{UNIX_PEER}" (a proxy on a Unix socket)') from None
    return TrustedProxies(tuple(networks), unix)


def parse_address(text: str) -> Address | None:
    """The IP address in a peer or X-Forwarded-For entry ("[v6]:port" and "v4:port"
    too); an IPv4 address mapped into IPv6 as IPv4. None: it names no address."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_key(address: Address) -> str:
    """The name of the client at `address`: an IPv4 address itself, an IPv6 one's network."""
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    return str(ipaddress.IPv6Network((int(address), conf.ipv6_prefix()), strict=False))


class LoneProxyWatch:
    """Notices, once, a reverse proxy TASKPULSE_TRUSTED_PROXIES does not list: the first
    requests all come from one private or loopback peer (or a Unix socket) and carry
    X-Forwarded-For, so every client counts as that one. Any other request ends the
    watch; after that it costs one attribute read."""

    def __init__(self, requests: int = LONE_PROXY_REQUESTS) -> None:
        self.requests = requests
        self.settled = False
        self._seen = 0
        self._peer: str | None = None
        self._lock = threading.Lock()  # sync views call in from several threads

    def observe(self, peer: str | None, address: Address | None, trusted: bool,
                forwarded_for: str | None) -> None:
        if self.settled:
            return
        # A proxy is a Unix socket or a private host; the public internet is clients.
        internal = peer is None or (address is not None
                                    and (address.is_private or address.is_loopback))
        proxy_like = not trusted and bool(forwarded_for) and internal
        with self._lock:
            if self.settled:
                return
            if not proxy_like or (self._seen and peer != self._peer):
                self.settled = True
                return
            self._peer, self._seen = peer, self._seen + 1
            if self._seen < self.requests:
                return
            self.settled = True
        where = "a Unix socket" if peer is None else peer
        hint = f'"{UNIX_PEER}"' if peer is None else "its address"
        logger.warning(
            "TaskPulse: the first %d requests all came through a proxy on %s that "
            "TASKPULSE_TRUSTED_PROXIES does not list, so every client shares one rate limit "
            "and one socket cap; add %s to TASKPULSE_TRUSTED_PROXIES "
            '(docs/INTEGRATION.md, "Behind a reverse proxy")', self.requests, where, hint)


lone_proxy_watch = LoneProxyWatch()


def client_address(peer: str | None, forwarded_for: str | None) -> str:
    """The client's name for per-client limits, from the peer address and an
    X-Forwarded-For value."""
    address = parse_address(peer) if peer else None
    if peer and address is None:
        return peer[:MAX_NAME_CHARS]  # a server's own notation; nothing to trust
    proxies = parse_trusted(conf.trusted_proxies())
    trusted = proxies.trust(address)
    lone_proxy_watch.observe(peer or None, address, trusted, forwarded_for)
    hops = [h.strip() for h in (forwarded_for or "").split(",") if h.strip()] if trusted else []
    if not hops:
        return UNKNOWN_CLIENT if address is None else client_key(address)
    # Walk from the nearest hop back past our own proxies: each hop was written by
    # the trusted one after it, and the first other one is the client.
    nearest: Address | None = None
    for hop in reversed(hops):
        hop_address = parse_address(hop)
        if hop_address is None:
            return hop[:MAX_NAME_CHARS]
        if not proxies.trust(hop_address):
            return client_key(hop_address)
        nearest = hop_address if nearest is None else nearest
    # Every hop is one of our own: the nearest one, which a proxy wrote for sure.
    return UNKNOWN_CLIENT if nearest is None else client_key(nearest)
