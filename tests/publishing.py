"""The record store as tests use it: the store, plus `publish(draft)` through the
publisher's own path (progress.publisher.publish: the outbox, the record script on
the publisher's connection), so a test records events as a worker does."""

from __future__ import annotations

from progress.publisher import publish
from progress.store.records import EventDraft, PublishOutcome, RecordStore


class PublishingStore(RecordStore):
    """A RecordStore whose `publish` is the worker's."""

    def publish(self, draft: EventDraft) -> PublishOutcome:
        return publish(draft)
