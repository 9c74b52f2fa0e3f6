"""How strong a key that signs task tokens must be, and the start-up check that holds
TASKPULSE_TOKEN_KEY (and its fallbacks) to it outside DEBUG: a weak key lets anyone
forge a token for any task. The example site holds SECRET_KEY to the same rule.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

MIN_KEY_LENGTH = 32
NEW_KEY_COMMAND = "python -c 'import secrets; print(secrets.token_urlsafe(50))'"
TOKEN_KEY_SETTINGS = ("TASKPULSE_TOKEN_KEY", "TASKPULSE_TOKEN_KEY_FALLBACKS")


def is_weak(key: str | bytes) -> bool:
    """Too short to be a random signing key."""
    return len(key) < MIN_KEY_LENGTH


def weak_token_keys() -> list[str]:
    """The token key settings holding a weak key, as `NAME` or `NAME[i]`."""
    key = getattr(settings, "TASKPULSE_TOKEN_KEY", None)
    fallbacks: Iterable[str | bytes] = getattr(settings, "TASKPULSE_TOKEN_KEY_FALLBACKS", ())
    weak = ["TASKPULSE_TOKEN_KEY"] if key and is_weak(key) else []
    weak += [f"TASKPULSE_TOKEN_KEY_FALLBACKS[{i}]"
             for i, fallback in enumerate(fallbacks) if is_weak(fallback)]
    return weak


def check_token_keys() -> None:
    """Refuse to start with DEBUG off and a weak token key (the app's ready())."""
    if settings.DEBUG:
        return
    weak = weak_token_keys()
    if weak:
        raise ImproperlyConfigured(
            f"{' and '.join(weak)} must be a random value of at least {MIN_KEY_LENGTH} "
            f"characters with DEBUG off (it signs task tokens: a weak key lets anyone "
            f"forge one), e.g. {NEW_KEY_COMMAND}; a status server and its host site set "
            "the same value")
