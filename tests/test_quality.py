"""The code stays ruff- and mypy-clean (the same commands developers run)."""

import subprocess
import sys

from tests.processes import BIN, ROOT


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_is_clean() -> None:
    """ruff check passes on the whole tree."""
    done = run(str(BIN / "ruff"), "check", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_is_clean() -> None:
    """mypy --strict (configured in pyproject.toml) passes."""
    done = run(sys.executable, "-m", "mypy", ".")
    assert done.returncode == 0, done.stdout + done.stderr
