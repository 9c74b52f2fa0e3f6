"""The SSE stream's pure parts: the resume id (progress/web/resume_ids.py) and the
bounded queue (progress/web/sse_queue.py)."""

from __future__ import annotations

import base64

import pytest
from django.test import override_settings

from progress.web.backlog import PROCESS_QUEUED
from progress.web.resume_ids import START, Position, decode, encode
from progress.web.sse_queue import Message, StreamQueue


def test_resume_id_round_trip() -> None:
    """An id holds every task's (epoch, seq, final), URL-safe and header-sized."""
    positions = [Position("e1", 7, False), START, Position("e2", 3, True)]
    text = encode(positions)
    assert decode(text, 3) == positions
    assert text.replace("-", "").replace("_", "").isalnum()


@pytest.mark.parametrize("text", [
    None, "", "not base64 !", base64.urlsafe_b64encode(b"{}").decode(),
    encode([Position("e", 1, False)]),  # one task, the stream has two
    base64.urlsafe_b64encode(b'[["e",-1,0],[null,0,0]]').decode(),
    base64.urlsafe_b64encode(b'[["e",1,2],[null,0,0]]').decode(),
    base64.urlsafe_b64encode(b'[[1,1,0],[null,0,0]]').decode(),
    "A" * 20_000,
])
def test_unreadable_resume_id_is_none(text: str | None) -> None:
    """Anything this server did not write for this stream reads as no id at all."""
    assert decode(text, 2) is None


def message(task: int, seq: int, progress_only: bool, text: str = "x") -> Message:
    return Message(text, task, Position("e", seq, False), progress_only, len(text))


async def test_progress_coalesces_only_while_backed_up() -> None:
    """A reader that keeps up gets every event; a backed-up one the newest progress of a
    task, with state changes kept."""
    queue = StreamQueue()
    for seq in (1, 2, 3):
        queue.put(message(0, seq, progress_only=seq > 1))
    assert [m.position.seq for m in queue.take() if m.position] == [1, 2, 3]
    queue.backed_up = True
    queue.put(message(0, 4, progress_only=False))  # a state change
    for seq in (5, 6, 7):
        queue.put(message(0, seq, progress_only=True))
    queue.put(message(1, 1, progress_only=True))
    assert [(m.task, m.position.seq) for m in queue.take() if m.position] == [
        (0, 4), (0, 7), (1, 1)]


@override_settings(TASKPULSE_SEND_QUEUE_MAX_BYTES=100)
async def test_queue_gives_up_past_its_bytes() -> None:
    """Past TASKPULSE_SEND_QUEUE_MAX_BYTES the queue drops everything and says so; the
    process's count gets its bytes back."""
    before = PROCESS_QUEUED.bytes
    queue = StreamQueue()
    queue.backed_up = True
    for seq in range(1, 5):
        queue.put(message(0, seq, progress_only=False, text="y" * 40))
    assert queue.overflowed and queue.take() == []
    assert PROCESS_QUEUED.bytes == before
