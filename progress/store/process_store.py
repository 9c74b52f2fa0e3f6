"""This process's record store, on its persistent connections (one per shard)."""

from __future__ import annotations

from progress.process_state import LoopSlot, ProcessSlot
from progress.store import shards
from progress.store.connections import async_clients, sync_clients
from progress.store.records import AsyncRecordStore, RecordStore

_store: ProcessSlot[RecordStore] = ProcessSlot(lambda: RecordStore(*sync_clients()),
                                               settings=shards.SETTINGS)


def store() -> RecordStore:
    """This process's record store, on its persistent connections (one per shard)."""
    return _store.get()


_async_store: LoopSlot[AsyncRecordStore] = LoopSlot(
    lambda: AsyncRecordStore(*async_clients()), settings=shards.SETTINGS)


def async_store() -> AsyncRecordStore:
    """This event loop's record store (the web side's readers): it reads each task on
    the task's shard, on the loop's clients."""
    return _async_store.get()
