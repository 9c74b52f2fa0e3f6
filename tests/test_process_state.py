"""Process-global state has one idiom (progress/process_state.py): a slot built on first
use, forgotten in a forked child and when a setting it depends on changes."""

from __future__ import annotations

import asyncio
import itertools
import os

from django.test import override_settings

from progress.process_state import ANY_SETTING, LoopSlot, ProcessSlot
from progress.publisher.heartbeat import heartbeat
from progress.store import connections, outbox


def test_a_slot_is_built_once() -> None:
    """get() builds the value on first use and keeps it."""
    built = itertools.count()
    slot = ProcessSlot(lambda: next(built))
    assert (slot.get(), slot.get()) == (0, 0)


def test_a_setting_it_depends_on_forgets_it() -> None:
    """A change of one of its settings drops the value (calling on_forget); others do not."""
    built = itertools.count()
    dropped: list[int] = []
    slot = ProcessSlot(lambda: next(built), settings={"TASKPULSE_TEST_SETTING"},
                       on_forget=dropped.append)
    any_slot = ProcessSlot(lambda: next(built), settings=ANY_SETTING)
    first, other = slot.get(), any_slot.get()
    with override_settings(TASKPULSE_UNRELATED=1):
        assert slot.get() == first and any_slot.get() != other
    with override_settings(TASKPULSE_TEST_SETTING=1):
        assert slot.get() != first
    assert dropped[0] == first


def test_a_forked_child_builds_its_own() -> None:
    """A forked child never uses its parent's value: its connections, threads, outboxes."""
    slot = ProcessSlot(os.getpid)
    parent = (slot.get(), connections.sync_clients(), outbox.outboxes(), heartbeat())
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, and leave without running the parent's cleanup
        child = (slot.get(), connections.sync_clients(), outbox.outboxes(), heartbeat())
        same = [a is b or a == b for a, b in zip(parent, child, strict=True)]
        os.write(write, repr(same).encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert os.read(read, 200).decode() == "[False, False, False, False]"
    os.close(read)
    assert slot.get() == os.getpid()


def test_a_loop_slot_holds_one_value_per_event_loop() -> None:
    """Each running event loop gets its own value (async clients belong to their loop)."""
    built = itertools.count()
    slot = LoopSlot(lambda: next(built))

    async def twice() -> tuple[int, int]:
        return slot.get(), slot.get()

    first, second = asyncio.run(twice()), asyncio.run(twice())
    assert first[0] == first[1] and second[0] == second[1] and first != second
