"""docs/GUARANTEES.md agrees with the code: every setting it names is in the settings
reference (docs/SETTINGS.md, itself checked against the code), and every test file it
cites is there."""

import re
from pathlib import Path

from tests.test_settings_reference import listed

DOC = Path(__file__).resolve().parent.parent / "docs" / "GUARANTEES.md"


def test_every_documented_setting_exists() -> None:
    """Each TaskPulse setting the page names is a setting of the reference."""
    named = set(re.findall(r"`(TASKPULSE_[A-Z0-9_]+)`", DOC.read_text()))
    assert len(named) >= 10
    assert sorted(named - set(listed())) == []


def test_every_cited_test_file_exists() -> None:
    """Each `test_*.py` the page cites exists."""
    cited = set(re.findall(r"\b(test_[a-z_]+\.py)\b", DOC.read_text()))
    tests = Path(__file__).resolve().parent
    assert cited and sorted(c for c in cited if not (tests / c).exists()) == []
