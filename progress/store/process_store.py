"""This process's record store, on its persistent connections (one per shard)."""

from __future__ import annotations

from progress.process_state import ProcessSlot
from progress.store import shards
from progress.store.connections import sync_clients
from progress.store.records import RecordStore

_store: ProcessSlot[RecordStore] = ProcessSlot(lambda: RecordStore(*sync_clients()),
                                               settings=shards.SETTINGS)


def store() -> RecordStore:
    """This process's record store, on its persistent connections (one per shard)."""
    return _store.get()
