"""Run the protocol side in-process as the launcher runs it: with the tunings
consumers/server/install.py installs after their guards pass."""

from __future__ import annotations

import pytest

from consumers import tuning
from consumers.server.install import install_tunings


def install_launcher_tunings(monkeypatch: pytest.MonkeyPatch) -> tuning.Installed:
    """Install what the launcher would (on this test's guards), undone after the test."""
    monkeypatch.setattr(tuning, "INSTALLED", tuning.Installed())
    install_tunings()
    return tuning.INSTALLED
