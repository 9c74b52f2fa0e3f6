"""docs/GUARANTEES.md agrees with the code: every setting it names exists, and every test
file it cites is there."""

import re
from pathlib import Path

from django.conf import settings

DOC = Path(__file__).resolve().parent.parent / "docs" / "GUARANTEES.md"


def test_every_documented_setting_exists() -> None:
    """Each setting in the table is a Django setting (read from the environment)."""
    names = re.findall(r"^\| `([A-Z_]+)`(?: / `([A-Z_]+)`)? \|", DOC.read_text(), re.M)
    flat = [n for pair in names for n in pair if n]
    assert len(flat) >= 10
    missing = [n for n in flat if not hasattr(settings, n)]
    assert missing == []


def test_every_cited_test_file_exists() -> None:
    """Each `test_*.py` the page cites exists."""
    cited = set(re.findall(r"\b(test_[a-z_]+\.py)\b", DOC.read_text()))
    tests = Path(__file__).resolve().parent
    assert cited and sorted(c for c in cited if not (tests / c).exists()) == []
