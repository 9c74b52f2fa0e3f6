"""Which browser origins may open a live stream (the WebSocket's handshake and the
Server-Sent Events endpoint alike): TASKPULSE_ALLOWED_ORIGINS, else ALLOWED_HOSTS.

A client that sends no Origin (scripts, servers) is let through, since every
subscription still needs a token.
"""

from urllib.parse import urlsplit

from django.http.request import validate_host

from progress import conf

ORIGINS_HINT = "(TASKPULSE_ALLOWED_ORIGINS, else ALLOWED_HOSTS)"


def origin_allowed(origin: bytes | str | None) -> bool:
    if origin is None:
        return True
    try:
        text = origin.decode("latin1") if isinstance(origin, bytes) else origin
        host = urlsplit(text).hostname
    except ValueError:
        return False
    if not host:
        return False
    if ":" in host:  # urlsplit drops an IPv6 literal's brackets; ALLOWED_HOSTS keeps them
        host = f"[{host}]"
    return validate_host(host, conf.allowed_origins())
