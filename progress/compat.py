"""Guards for the private internals of other libraries that TaskPulse relies on.

Some of TaskPulse's speed comes from reaching past a library's public API
(docs/BENCHMARKS.md, "Profile"): reading Twisted's write buffer, writing
autobahn frames in one call, taking over redis-py's socket. A new release of
that library may rename or change what is relied on, so each such use is a
`Guard`:

- the versions the test suite ran against are recorded here (`TESTED`);
- at start-up (the first use in a process) `check()` looks at the installed
  version and at every attribute the tuned code path touches; only if the
  version is in range and all of them exist is the tuned path taken;
- otherwise the public code path is taken, and ONE warning line says which
  tuning is off, why, and what is used instead. A guard without a public
  path (`progress/store/shards.py`'s hash) refuses to start instead.

`TASKPULSE_UNTESTED=daphne,redis` (or `*`) makes those distributions count as
untested whatever is installed: how the tests prove every fallback works,
and how an operator turns a tuning off without a code change.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata

logger = logging.getLogger(__name__)

UNTESTED_ENV = "TASKPULSE_UNTESTED"

# The versions the whole test suite ran against, per distribution: [low, high).
# Widen a range only after the suite (and `pytest tests/test_compat.py`) passed
# with the new release installed.
TESTED: dict[str, tuple[str, str]] = {
    "daphne": ("4.2.3", "4.3"),
    "autobahn": ("26.10", "26.11"),
    "Twisted": ("26.10", "26.11"),
    "channels": ("4.3", "4.4"),
    "channels-redis": ("4.3", "4.4"),
    "redis": ("8.1", "8.2"),
    "celery": ("5.7", "5.8"),
    "kombu": ("5.7", "5.8"),
}

_RELEASE = re.compile(r"\d+(?:\.\d+)*")


def installed_version(distribution: str) -> str | None:
    """The installed version of a distribution, None if it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string ("26.10.2rc1" -> (26, 10, 2))."""
    found = _RELEASE.match(version)
    return tuple(int(part) for part in found.group().split(".")) if found else ()


def _padded(parts: tuple[int, ...], width: int) -> tuple[int, ...]:
    return parts + (0,) * (width - len(parts))


def describe_range(distribution: str) -> str:
    low, high = TESTED[distribution]
    return f">={low},<{high}"


def _normal(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def forced_untested() -> frozenset[str]:
    """The distributions TASKPULSE_UNTESTED names ("*": all of them)."""
    raw = os.environ.get(UNTESTED_ENV, "")
    return frozenset(_normal(name) for name in raw.split(",") if name.strip())


def version_problem(distribution: str) -> str | None:
    """Why the installed `distribution` is not one the suite ran against (None: it is)."""
    version = installed_version(distribution)
    if version is None:
        return f"{distribution} is not installed"
    forced = forced_untested()
    if "*" in forced or _normal(distribution) in forced:
        return f"{distribution} {version} is treated as untested ({UNTESTED_ENV})"
    low, high = (release(bound) for bound in TESTED[distribution])
    current = release(version)
    width = max(len(low), len(high), len(current))
    if not _padded(low, width) <= _padded(current, width) < _padded(high, width):
        return (f"{distribution} {version} is outside the tested range "
                f"{describe_range(distribution)}")
    return None


def resolve(spec: str) -> object:
    """The object a "module:Attr.path" spec names (AttributeError/ImportError if gone)."""
    module_name, _, path = spec.partition(":")
    target: object = importlib.import_module(module_name)
    for name in filter(None, path.split(".")):
        target = getattr(target, name)
    return target


def missing_attributes(specs: Iterable[str]) -> list[str]:
    """The specs that no longer resolve."""
    gone = []
    for spec in specs:
        try:
            resolve(spec)
        except (ImportError, AttributeError):
            gone.append(spec)
    return gone


def unassigned(spec: str, names: Iterable[str]) -> list[str]:
    """The instance attributes in `names` that the function `spec` no longer mentions
    as `self.<name>` (instance attributes exist only once a method set them, so the
    method's source is where to look for them)."""
    try:
        source = inspect.getsource(resolve(spec))  # type: ignore[arg-type]
    except (ImportError, AttributeError, OSError, TypeError):
        return [f"{spec} (source not readable)"]
    return [f"{spec}: self.{name}" for name in names
            if not re.search(rf"\bself\.{re.escape(name)}\b", source)]


@dataclass(frozen=True)
class Guard:
    """One tuning that relies on other libraries' internals."""

    name: str  # what the tuning is, as the log line names it
    fallback: str  # what runs instead when it is off
    distributions: tuple[str, ...]
    requires: tuple[str, ...] = ()  # "module:Attr.path" that must resolve
    # (function spec, instance attributes its source must assign or read)
    assigns: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # further checks: each returns a list of problems
    extra: tuple[Callable[[], list[str]], ...] = field(default=(), compare=False)

    def problems(self) -> list[str]:
        """Every reason the tuned path may not be taken (empty: it may)."""
        found = [problem for problem in map(version_problem, self.distributions) if problem]
        found += [f"{spec} is gone" for spec in missing_attributes(self.requires)]
        for spec, names in self.assigns:
            found += [f"{item} is gone" for item in unassigned(spec, names)]
        for check in self.extra:
            try:
                found += check()
            except Exception as exc:  # a check that cannot run counts against the tuning
                found.append(f"{getattr(check, '__name__', check)} failed: {exc!r}")
        return found


@dataclass(frozen=True)
class Verdict:
    enabled: bool
    reason: str = ""


_verdicts: dict[str, Verdict] = {}
_lock = threading.Lock()


def check(guard: Guard) -> Verdict:
    """Whether `guard`'s tuned path may be taken in this process. Decided once; when
    it may not, one warning line says why and what is used instead."""
    verdict = _verdicts.get(guard.name)
    if verdict is not None:
        return verdict
    with _lock:
        verdict = _verdicts.get(guard.name)
        if verdict is None:
            problems = guard.problems()
            verdict = Verdict(not problems, "; ".join(problems))
            if problems:
                logger.warning("TaskPulse: turned off %s: %s (%s)",
                               guard.name, guard.fallback, verdict.reason)
            _verdicts[guard.name] = verdict
    return verdict


def enabled(guard: Guard) -> bool:
    return check(guard).enabled


def forget() -> None:
    """Decide every guard again at its next use (tests)."""
    with _lock:
        _verdicts.clear()
