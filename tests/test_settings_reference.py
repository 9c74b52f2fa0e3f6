"""docs/SETTINGS.md is the one settings reference, and it matches the code: every
setting TaskPulse reads is listed there, every listed name is read, and the example
site reads from its environment exactly the ones marked **env**."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "SETTINGS.md"
SETTING = re.compile(r'"(TASKPULSE_[A-Z0-9_]+)"')
# progress/store/servers.py reads TASKPULSE_<name> for each read("<name>")
SERVER_SETTING = re.compile(r'read\("([A-Z_]+)"\)')
ENVIRONMENT_ONLY = {"TASKPULSE_UNTESTED"}
ROW = re.compile(r"^\| `(TASKPULSE_[A-Z0-9_]+)` \|(.*)$", re.M)


def read_in_code() -> set[str]:
    names: set[str] = set()
    for path in [*(ROOT / "progress").rglob("*.py"), *(ROOT / "consumers").rglob("*.py")]:
        text = path.read_text()
        names |= set(SETTING.findall(text))
        if path.name == "servers.py":
            names |= {f"TASKPULSE_{name}" for name in SERVER_SETTING.findall(text)}
    return names


def listed() -> dict[str, str]:
    return dict(ROW.findall(REFERENCE.read_text()))


def test_every_setting_read_is_listed_and_every_listed_one_is_read() -> None:
    in_code, in_doc = read_in_code(), set(listed())
    assert in_code - in_doc == set(), "read by the code, missing from docs/SETTINGS.md"
    assert in_doc - in_code == set(), "listed in docs/SETTINGS.md, read nowhere"


def test_the_example_site_reads_the_ones_marked_env() -> None:
    site = (ROOT / "project" / "settings.py").read_text()
    read_by_site = set(re.findall(r'env_[a-z]+\("(TASKPULSE_[A-Z0-9_]+)"', site))
    read_by_site |= set(re.findall(r'"(TASKPULSE_[A-Z0-9_]+)"', site))
    marked = {name for name, rest in listed().items() if "**env**" in rest}
    marked = {"TASKPULSE_PREFIX" if name == "TASKPULSE_KEY_PREFIX" else name for name in marked}
    assert marked - read_by_site == set(), "marked **env**, not read by project/settings.py"


def test_no_other_doc_keeps_a_settings_table() -> None:
    """The README, GUARANTEES.md and INTEGRATION.md point to the reference instead."""
    for doc in ("README.md", "docs/GUARANTEES.md", "docs/INTEGRATION.md"):
        rows = ROW.findall((ROOT / doc).read_text())
        assert rows == [], f"{doc} describes settings itself: {[name for name, _ in rows]}"


def test_a_setting_under_its_old_name_still_works_with_a_warning() -> None:
    import pytest
    from django.conf import settings
    from django.test import override_settings

    from progress import conf

    with override_settings(PROGRESS_STALL_TIMEOUT=7.0), \
            pytest.warns(DeprecationWarning, match="PROGRESS_STALL_TIMEOUT is deprecated"):
        del settings.TASKPULSE_STALL_TIMEOUT  # a host site that still says PROGRESS_...
        assert conf.stall_timeout() == 7.0
    with override_settings(TASKPULSE_STALL_TIMEOUT=8.0, PROGRESS_STALL_TIMEOUT=7.0):
        assert conf.stall_timeout() == 8.0  # the new name wins
