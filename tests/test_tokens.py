"""Tokens: signed, per task, expiring, with permissions."""

import pytest
from django.test import override_settings

from progress.tokens import WATCH_AND_CANCEL, Permission, TokenError, issue_token, verify_token


def test_valid_token_grants_its_task() -> None:
    """A token issued for a task opens that task, to watch only unless asked for more."""
    grant = verify_token(issue_token("task-1"), "task-1")
    assert grant.task_id == "task-1" and grant.permissions == {Permission.WATCH}
    grant = verify_token(issue_token("task-1", WATCH_AND_CANCEL), "task-1", Permission.CANCEL)
    assert grant.permissions == {Permission.WATCH, Permission.CANCEL}


def test_token_for_another_task_is_refused() -> None:
    """A token for one task opens no other."""
    with pytest.raises(TokenError, match="another task"):
        verify_token(issue_token("task-1"), "task-2")


def test_tampered_token_is_refused() -> None:
    """Changing any character of a token invalidates it."""
    token = issue_token("task-1")
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    with pytest.raises(TokenError, match="invalid"):
        verify_token(tampered, "task-1")


def test_expired_token_is_refused() -> None:
    """A token older than TASKPULSE_TOKEN_MAX_AGE is refused."""
    token = issue_token("task-1")
    with override_settings(TASKPULSE_TOKEN_MAX_AGE=-1), pytest.raises(TokenError, match="expired"):
        verify_token(token, "task-1")


def test_missing_token_is_refused() -> None:
    """An empty token is refused with a reason."""
    with pytest.raises(TokenError, match="required"):
        verify_token("", "task-1")


def test_watch_only_token_cannot_cancel() -> None:
    """A token without the cancel permission does not allow cancel."""
    token = issue_token("task-1", frozenset({Permission.WATCH}))
    verify_token(token, "task-1", Permission.WATCH)
    with pytest.raises(TokenError, match="cancel"):
        verify_token(token, "task-1", Permission.CANCEL)


def test_token_signed_with_other_secret_is_refused() -> None:
    """A token from a server with another DJANGO_SECRET_KEY is invalid here."""
    with override_settings(SECRET_KEY="another-secret-key-of-sufficient-length-123456"):
        token = issue_token("task-1")
    with pytest.raises(TokenError, match="invalid"):
        verify_token(token, "task-1")
