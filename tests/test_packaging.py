"""The distribution lists every installable package, and only those: each folder
of progress/ and consumers/ with Python in it, the static files, nothing of the
example site. (The adoption test installs the built wheel for real.)"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTALLED = ("progress", "consumers")


def declared() -> dict[str, object]:
    config: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return config


def test_every_package_of_the_app_is_declared() -> None:
    """A new subpackage cannot be forgotten: the declared list is the tree's."""
    tool = declared()["tool"]
    assert isinstance(tool, dict)
    listed = set(tool["setuptools"]["packages"])
    found = {str(init.parent.relative_to(ROOT)).replace("/", ".")
             for top in INSTALLED for init in (ROOT / top).rglob("__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    extra = listed - found - {"progress.static"}
    assert not extra, f"listed but not in the tree: {sorted(extra)}"
    assert not any(name.split(".")[0] in {"project", "tests", "bench"} for name in listed)


def test_static_files_install_where_staticfiles_finds_them() -> None:
    """static/ is the progress app's static folder in the wheel (taskpulse/*.js, *.css)."""
    tool = declared()["tool"]
    assert isinstance(tool, dict)
    assert tool["setuptools"]["package-dir"]["progress.static"] == "static"
    data = tool["setuptools"]["package-data"]["progress.static"]
    assert {"taskpulse/*.js", "taskpulse/*.css"} <= set(data)
    assert (ROOT / "static" / "taskpulse" / "task-progress.js").is_file()


def test_python_versions_are_not_capped() -> None:
    """No upper bound on Python; daphne at least 4.2.2 (the 2026 WebSocket CVE fixes)."""
    project = declared()["project"]
    assert isinstance(project, dict)
    assert "<" not in project["requires-python"]
    daphne = next(d for d in project["dependencies"] if d.startswith("daphne"))
    assert ">=4.2.2" in daphne
