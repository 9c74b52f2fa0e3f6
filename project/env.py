"""Typed readers for settings that come from the environment.

Kept apart from settings.py so the same parsing (and its error messages)
serves settings, the Celery app and the scripts.
"""

import os

from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    accepted = ", ".join(sorted(TRUE_WORDS | FALSE_WORDS - {""}))
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean; use one of: {accepted}")


def env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None


def env_int(name: str, default: int) -> int:
    value = env_number(name, default)
    if value != int(value):
        raise ImproperlyConfigured(f"{name}={value!r} must be a whole number")
    return int(value)


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]
