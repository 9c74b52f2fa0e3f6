"""Guards for the private internals of other libraries that TaskPulse relies on.

Some of TaskPulse's speed comes from reaching past a library's public API
(docs/BENCHMARKS.md, "Profile"): reading Twisted's write buffer, writing
autobahn frames in one call, taking over redis-py's socket. A new release of
that library may rename or change what is relied on, so each such use is a
`Guard` that looks at what it uses, never at version numbers:

- every attribute the tuned path touches resolves (`requires`), and the
  instance attributes it reads are still set by the library's own methods
  (`assigns`);
- every function or method it overrides still has the parameters the override
  was written for, and every one it calls still accepts the call as made
  (`overrides`, `calls`: `inspect.signature`);
- where cheap, a self-test runs the behaviour itself (`extra`): build a frame
  both ways and compare the bytes, open a redis-py connection and use the
  socket it takes over.

The first use in a process decides (`check()`); when any check fails the
public code path runs and ONE warning line says which tuning is off, which
check failed, and what runs instead. A guard without a public path
(`progress/store/shards.py`'s hash) refuses to start instead.

The installed releases are only reported: `TESTED` records what the test
suite ran with (requirements/constraints.txt), and a release outside it is
named as untested in the launcher's start-up line and in any guard's line, but
a release that still has what a guard checks keeps its tuning.
`TASKPULSE_UNTESTED=daphne,redis` (or `*`) turns off the tunings that rely on
those distributions whatever is installed: how the tests prove every fallback
works, and how an operator turns a tuning off without a code change.
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

# The releases the whole test suite ran with (requirements/constraints.txt, which
# tests/test_compat.py compares this with). Reported only: nothing decides on it.
TESTED: dict[str, str] = {
    "daphne": "4.2.3",
    "autobahn": "26.10.2",
    "Twisted": "26.10.0",
    "channels": "4.3.2",
    "channels-redis": "4.3.0",
    "redis": "8.1.0",
    "hiredis": "3.5.0",
    "celery": "5.7.0",
    "kombu": "5.7.0",
}


def installed_version(distribution: str) -> str | None:
    """The installed version of a distribution, None if it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _normal(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def tested_version(distribution: str) -> str | None:
    """The release of `distribution` the suite ran with (None: not recorded)."""
    return next((version for name, version in TESTED.items()
                 if _normal(name) == _normal(distribution)), None)


def is_untested(distribution: str) -> bool:
    """Whether the installed release differs from the one the suite ran with."""
    version, tested = installed_version(distribution), tested_version(distribution)
    return None not in (version, tested) and version != tested


def describe_release(distribution: str) -> str:
    """"autobahn 26.10.2", or with what the suite ran with when that differs
    ("autobahn 26.11.1 (untested: the suite ran with 26.10.2)")."""
    version = installed_version(distribution)
    if version is None:
        return f"{distribution} (not installed)"
    if not is_untested(distribution):
        return f"{distribution} {version}"
    return f"{distribution} {version} (untested: the suite ran with {tested_version(distribution)})"


def untested_releases(distributions: Iterable[str]) -> list[str]:
    """The installed releases among `distributions` the suite did not run with, described."""
    return [describe_release(name) for name in distributions if is_untested(name)]


def forced_untested() -> frozenset[str]:
    """The distributions TASKPULSE_UNTESTED names ("*": all of them)."""
    raw = os.environ.get(UNTESTED_ENV, "")
    return frozenset(_normal(name) for name in raw.split(",") if name.strip())


def forced_off(distributions: Iterable[str]) -> list[str]:
    """Why TASKPULSE_UNTESTED turns off a tuning relying on `distributions` (empty: it does not)."""
    forced = forced_untested()
    named = [name for name in distributions if "*" in forced or _normal(name) in forced]
    return [f"{UNTESTED_ENV} names {', '.join(named)}"] if named else []


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


def parameters(target: object) -> str:
    """A callable's parameters without annotations or defaults: "(self, data, sync, chopsize)"."""
    signature = inspect.signature(target)  # type: ignore[arg-type]
    bare = [parameter.replace(annotation=parameter.empty, default=parameter.empty)
            for parameter in signature.parameters.values()]
    return str(signature.replace(parameters=bare, return_annotation=signature.empty))


def override_problem(spec: str, expected: str) -> str | None:
    """Why an override written for `spec` taking `expected` parameters no longer fits
    (its callers may pass what the override does not take, or miss what it needs)."""
    try:
        found = parameters(resolve(spec))
    except (ImportError, AttributeError):
        return f"{spec} is gone"
    except (TypeError, ValueError):
        return f"{spec} has no readable signature"
    return None if found == expected else f"{spec} takes {found}, not {expected}"


def call_problem(spec: str, call: str) -> str | None:
    """Why `spec` no longer accepts a call made as `call`: positional names, then
    keywords with a trailing "=" ("self, command, check_health=")."""
    items = [item.strip() for item in call.split(",") if item.strip()]
    positional = [item for item in items if not item.endswith("=")]
    keywords = {item[:-1]: None for item in items if item.endswith("=")}
    try:
        signature = inspect.signature(resolve(spec))  # type: ignore[arg-type]
    except (ImportError, AttributeError):
        return f"{spec} is gone"
    except (TypeError, ValueError):
        return f"{spec} has no readable signature"
    try:
        signature.bind(*positional, **keywords)
    except TypeError as exc:
        return f"{spec}{parameters(resolve(spec))} no longer takes ({call}): {exc}"
    return None


@dataclass(frozen=True)
class Guard:
    """One tuning that relies on other libraries' internals."""

    name: str  # what the tuning is, as the log line names it
    fallback: str  # what runs instead when it is off
    # whose internals it relies on: reported, and what TASKPULSE_UNTESTED names
    distributions: tuple[str, ...]
    requires: tuple[str, ...] = ()  # "module:Attr.path" that must resolve
    # (function spec, instance attributes its source must assign or read)
    assigns: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # (method spec, the parameters TaskPulse's override of it takes: "(self, data)")
    overrides: tuple[tuple[str, str], ...] = ()
    # (function spec, how TaskPulse calls it: "self, command, check_health=")
    calls: tuple[tuple[str, str], ...] = ()
    # further checks and self-tests of the behaviour: each returns a list of problems
    extra: tuple[Callable[[], list[str]], ...] = field(default=(), compare=False)

    def problems(self) -> list[str]:
        """Every reason the tuned path may not be taken (empty: it may)."""
        found = forced_off(self.distributions)
        if found:
            return found
        found += [f"{spec} is gone" for spec in missing_attributes(self.requires)]
        for spec, names in self.assigns:
            found += [f"{item} is gone" for item in unassigned(spec, names)]
        found += filter(None, (override_problem(spec, expected)
                               for spec, expected in self.overrides))
        found += filter(None, (call_problem(spec, call) for spec, call in self.calls))
        if found:
            return found  # a self-test would only trip over what is already missing
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
    it may not, one warning line says which check failed and what is used instead."""
    verdict = _verdicts.get(guard.name)
    if verdict is not None:
        return verdict
    with _lock:
        verdict = _verdicts.get(guard.name)
        if verdict is None:
            problems = guard.problems()
            verdict = Verdict(not problems, "; ".join(problems))
            if problems:
                untested = untested_releases(guard.distributions)
                logger.warning("TaskPulse: turned off %s: %s (%s)%s",
                               guard.name, guard.fallback, verdict.reason,
                               f"; installed: {', '.join(untested)}" if untested else "")
            _verdicts[guard.name] = verdict
    return verdict


def enabled(guard: Guard) -> bool:
    return check(guard).enabled


def forget() -> None:
    """Decide every guard again at its next use (tests)."""
    with _lock:
        _verdicts.clear()
