"""Settings come from the environment; production mode refuses insecure ones."""

import os
import subprocess
import sys

import pytest

from consumers.origin import origin_allowed
from tests.processes import ROOT

STRONG_KEY = "k" * 50


def import_settings(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-c", "import project.settings as s; print(s.DEBUG, s.ALLOWED_HOSTS)"],
        cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60,
    )


def test_development_defaults_work() -> None:
    """With nothing set, settings load in debug mode with local hosts."""
    done = import_settings()
    assert done.returncode == 0, done.stderr
    assert "True" in done.stdout and "127.0.0.1" in done.stdout


def test_production_refuses_missing_secret_key() -> None:
    """DJANGO_DEBUG=0 without DJANGO_SECRET_KEY is a startup error that says what to do."""
    done = import_settings(DJANGO_DEBUG="0")
    assert done.returncode != 0 and "DJANGO_SECRET_KEY" in done.stderr


def test_production_refuses_wildcard_hosts() -> None:
    """DJANGO_DEBUG=0 refuses DJANGO_ALLOWED_HOSTS='*'."""
    done = import_settings(DJANGO_DEBUG="0", DJANGO_SECRET_KEY=STRONG_KEY,
                           DJANGO_ALLOWED_HOSTS="*")
    assert done.returncode != 0 and "DJANGO_ALLOWED_HOSTS" in done.stderr


def test_production_with_secure_settings_starts() -> None:
    """A real key and explicit hosts are accepted in production mode."""
    done = import_settings(DJANGO_DEBUG="0", DJANGO_SECRET_KEY=STRONG_KEY,
                           DJANGO_ALLOWED_HOSTS="progress.example.com")
    assert done.returncode == 0, done.stderr
    assert "False" in done.stdout and "progress.example.com" in done.stdout


def test_bad_boolean_is_a_clear_error() -> None:
    """DJANGO_DEBUG=maybe names the accepted values."""
    done = import_settings(DJANGO_DEBUG="maybe")
    assert done.returncode != 0 and "not a boolean" in done.stderr


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),
        (b"http://localhost:8000", True),
        (b"http://127.0.0.1:8000", True),
        (b"http://[::1]:8000", True),
        (b"http://evil.example.com", False),
        (b"http://localhost.evil.com", False),
        (b"null", False),
        (b"http://[bad", False),
    ],
)
def test_origin_check_uses_allowed_hosts(origin: bytes | None, allowed: bool) -> None:
    """Browser origins must be in ALLOWED_HOSTS; clients without Origin pass."""
    assert origin_allowed(origin) is allowed
