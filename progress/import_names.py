"""TaskPulse installs the top-level packages `progress` and `consumers`; another
distribution installing one of those names writes into the same folder, and each
breaks the other (the `progress` progress-bar library's `import progress.bar`
fails, and pip checks no such clash). Refused at start-up, naming both.
"""

from __future__ import annotations

from importlib import metadata

from django.core.exceptions import ImproperlyConfigured

DISTRIBUTION = "taskpulse"
IMPORT_NAMES = ("progress", "consumers")


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def clashes() -> dict[str, list[str]]:
    """Each of TaskPulse's import names that another installed distribution provides
    too, with those distributions' names."""
    providers = metadata.packages_distributions()
    found: dict[str, list[str]] = {}
    for name in IMPORT_NAMES:
        others = sorted({dist for dist in providers.get(name, [])
                         if _canonical(dist) != DISTRIBUTION})
        if others:
            found[name] = others
    return found


def _described(dist: str) -> str:
    try:
        return f"{dist} {metadata.version(dist)}"
    except metadata.PackageNotFoundError:
        return dist


def check_import_names() -> None:
    """Raise ImproperlyConfigured when another distribution provides `progress` or
    `consumers` beside TaskPulse."""
    found = clashes()
    if not found:
        return
    lines = [f"The import name '{name}' is installed by both {DISTRIBUTION} and "
             + " and ".join(_described(dist) for dist in others)
             for name, others in found.items()]
    uninstall = " ".join(sorted({dist for others in found.values() for dist in others}))
    raise ImproperlyConfigured(
        "; ".join(lines) + ". They install into the same folder and overwrite each other's "
        f"files, so neither works. Use a separate virtualenv for the other, or remove it: "
        f"pip uninstall {uninstall} && pip install --force-reinstall --no-deps {DISTRIBUTION} "
        "(TaskPulse's docs/INTEGRATION.md, at the top).")
