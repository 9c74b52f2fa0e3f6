"""Signed, expiring tokens that authorise one task id (PROTOCOL.md §5).

Signed with TASKPULSE_TOKEN_KEY when set (a separate status server shares that
key with the host site, not its whole SECRET_KEY), else with SECRET_KEY.
"""

from dataclasses import dataclass
from enum import StrEnum

from django.core import signing

from progress import conf

SALT = "taskpulse.token.v1"


class Permission(StrEnum):
    WATCH = "watch"
    CANCEL = "cancel"


# One letter per permission keeps tokens short in URLs.
_CODES = {Permission.WATCH: "w", Permission.CANCEL: "c"}
_PERMISSIONS = {code: perm for perm, code in _CODES.items()}

WATCH_ONLY = frozenset({Permission.WATCH})
WATCH_AND_CANCEL = frozenset({Permission.WATCH, Permission.CANCEL})
# Tokens travel in page markup and URLs for TASKPULSE_TOKEN_MAX_AGE (24 h): a leaked
# link must not be able to cancel. Only a page that offers a cancel button asks
# for WATCH_AND_CANCEL.
DEFAULT_PERMISSIONS = WATCH_ONLY


@dataclass(frozen=True, slots=True)
class Grant:
    task_id: str
    permissions: frozenset[Permission]


class TokenError(Exception):
    """The token is missing, malformed, tampered with, expired or for another task."""


def issue_token(
    task_id: str, permissions: frozenset[Permission] = DEFAULT_PERMISSIONS
) -> str:
    """A token for `task_id`: give it to the browser that may watch the task. It may
    cancel the task too only with `permissions=WATCH_AND_CANCEL`."""
    codes = "".join(sorted(_CODES[p] for p in permissions))
    key, _fallbacks = conf.token_keys()
    return signing.dumps([task_id, codes], key=key, salt=SALT, compress=False)


def verify_token(token: str, task_id: str, needs: Permission = Permission.WATCH) -> Grant:
    """The grant a token carries for `task_id`, or TokenError saying why it is refused."""
    if not token:
        raise TokenError("a token is required")
    try:
        key, fallbacks = conf.token_keys()
        payload = signing.loads(token, key=key, salt=SALT, max_age=conf.token_max_age(),
                                fallback_keys=fallbacks)
    except signing.SignatureExpired:
        raise TokenError("token expired") from None
    except signing.BadSignature:
        raise TokenError("token invalid") from None
    if not (isinstance(payload, list) and len(payload) == 2):
        raise TokenError("token invalid")
    token_task, codes = payload
    if token_task != task_id:
        raise TokenError("token is for another task")
    permissions = frozenset(_PERMISSIONS[c] for c in str(codes) if c in _PERMISSIONS)
    if needs not in permissions:
        raise TokenError(f"token does not allow {needs.value}")
    return Grant(task_id, permissions)
