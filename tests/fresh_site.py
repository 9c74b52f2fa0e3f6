"""What the tests that build a brand-new site share: the wheel of this checkout, an
environment free of this test process's settings, and commands that must succeed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests import processes

COMMAND_TIMEOUT = 240.0  # one command: pip install with its dependencies, startproject, ...
# What is left out of the copy of this checkout the wheel is built from: the
# build then never writes into the shared work tree.
NOT_SOURCE = (".git", ".venv", "*_cache", ".grimp_cache", "__pycache__", "*.egg-info",
              "build", "dist", "node_modules", "test-results", "tests", "bench")
# Variables of this test process that must not leak into a new site's processes
# (conftest.py points DJANGO_SETTINGS_MODULE at project.settings).
PRIVATE_ENV = ("DJANGO_", "TASKPULSE_", "PROGRESS_", "CELERY_", "REDIS_", "PYTHON",
               "VIRTUAL_ENV", "PYTEST_", "Q_CLUSTER")


def clean_env(bin_dir: Path | None = None, /, **extra: str) -> dict[str, str]:
    """This process's environment without its Django/TaskPulse/Celery variables, with
    `bin_dir` (a virtualenv's) first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(PRIVATE_ENV)}
    if bin_dir is not None:
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run(argv: list[str], cwd: Path, env: dict[str, str],
        timeout: float = COMMAND_TIMEOUT) -> str:
    """Run a command that must succeed; its output."""
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, (
        f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def build_wheel(source: Path, out: Path) -> Path:
    """The wheel of this checkout, built as a user builds it (`pip wheel`, isolated
    build) from a copy at `source`, into `out`."""
    shutil.copytree(processes.ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    out.mkdir(parents=True, exist_ok=True)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(out),
         str(source)], cwd=out, env=clean_env())
    wheels = sorted(out.glob("taskpulse-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]
