"""Process-global state, one idiom: a slot per thing this process builds once and keeps.

A slot builds its value on first use and forgets it

- in a forked child (a Celery/Django-Q pool worker): the parent's connections,
  threads and locks are not the child's to use, so the child builds its own;
- when a Django setting it was built from changes (`setting_changed`, in tests):
  `settings` names them (ANY_SETTING: every change).

`ProcessSlot` holds one value per process, `LoopSlot` one per running event loop
(async Redis clients belong to the loop that opened them). Every cache of
connections, threads or settings-derived values in `progress` and `consumers`
is one of these; a module never keeps its own pid-keyed dict or fork hook.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Callable, Collection
from typing import Any, Generic, TypeVar

from django.core.signals import setting_changed
from django.dispatch import receiver

T = TypeVar("T")

ANY_SETTING: frozenset[str] = frozenset({"*"})
_EMPTY: Any = object()
_slots: weakref.WeakSet[_Slot] = weakref.WeakSet()


class _Slot:
    """What both kinds of slot share: the settings they depend on, and how they forget."""

    __slots__ = ("__weakref__", "_settings")

    def __init__(self, settings: Collection[str]) -> None:
        self._settings = frozenset(settings)
        _slots.add(self)

    def depends_on(self, setting: str) -> bool:
        return setting in self._settings or "*" in self._settings

    def forget(self) -> None:
        """Drop the value (a setting it was built from changed); the next use builds anew."""
        raise NotImplementedError

    def _forget_in_child(self) -> None:
        raise NotImplementedError


class ProcessSlot(_Slot, Generic[T]):
    """One value per process, built by `build()` on first `get()`.

    `on_forget` is called with the value dropped on a settings change (to stop a
    thread, close a connection); never in a forked child, where the value is the
    parent's.
    """

    __slots__ = ("_build", "_lock", "_on_forget", "_value")

    def __init__(self, build: Callable[[], T], settings: Collection[str] = (),
                 on_forget: Callable[[T], None] | None = None) -> None:
        super().__init__(settings)
        self._build = build
        self._on_forget = on_forget
        self._lock = threading.Lock()
        self._value: T = _EMPTY

    def get(self) -> T:
        # Read without the lock: this is on the publisher's per-event path.
        value = self._value
        if value is _EMPTY:
            with self._lock:
                value = self._value
                if value is _EMPTY:
                    value = self._value = self._build()
        return value

    def peek(self) -> T | None:
        """The value if it was built, without building it."""
        value = self._value
        return None if value is _EMPTY else value

    def forget(self) -> None:
        with self._lock:
            old, self._value = self._value, _EMPTY
        if old is not _EMPTY and self._on_forget is not None:
            self._on_forget(old)

    def _forget_in_child(self) -> None:
        # The lock may have been held by a parent thread that does not exist here.
        self._lock = threading.Lock()
        self._value = _EMPTY


class LoopSlot(_Slot, Generic[T]):
    """One value per running event loop, built by `build()` on first `get()` in it, and
    dropped with the loop."""

    __slots__ = ("_build", "_values")

    def __init__(self, build: Callable[[], T], settings: Collection[str] = ()) -> None:
        super().__init__(settings)
        self._build = build
        self._values: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary())

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        try:
            return self._values[loop]
        except KeyError:
            value = self._values[loop] = self._build()
            return value

    def forget(self) -> None:
        self._values.clear()

    def _forget_in_child(self) -> None:
        self._values = weakref.WeakKeyDictionary()


def _forget_all_in_child() -> None:
    for slot in list(_slots):
        slot._forget_in_child()


os.register_at_fork(after_in_child=_forget_all_in_child)


@receiver(setting_changed)
def _forget_on_setting_changed(setting: str = "", **_: Any) -> None:
    for slot in list(_slots):
        if slot.depends_on(setting):
            slot.forget()
