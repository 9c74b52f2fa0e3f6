"""The per-connection send queue (consumers/outbox.py): coalescing, order and bounds."""

from consumers.outbox import HIGH_WATER, QueueVerdict, SendQueue


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.backlog = 0
        self.overflows = 0

    async def send(self, frame: str) -> None:
        self.sent.append(frame)

    def pending(self) -> int:
        return self.backlog

    async def overflow(self) -> None:
        self.overflows += 1


def make(t: FakeTransport, max_frames: int = 100, max_wait: float = 60.0) -> SendQueue:
    return SendQueue(t.send, t.pending, t.overflow, max_frames, max_wait,
                     max_bytes=2**30, process_max_bytes=2**40)


async def test_sends_straight_while_the_client_keeps_up() -> None:
    """No backlog: every frame goes out at once, none is coalesced."""
    t = FakeTransport()
    q = make(t)
    for i in range(3):
        assert await q.put(f"p{i}", "a", progress_only=True) is QueueVerdict.SENT
    assert t.sent == ["p0", "p1", "p2"]


async def test_backlog_coalesces_progress_but_keeps_state_changes() -> None:
    """Queued progress of a task keeps only the newest; state changes and order are kept."""
    t = FakeTransport()
    q = make(t)
    t.backlog = HIGH_WATER + 1
    for frame, task, progress in [("a1", "a", True), ("b1", "b", True), ("a2", "a", True),
                                  ("aS", "a", False), ("a3", "a", True), ("a4", "a", True),
                                  ("b2", "b", True)]:
        assert await q.put(frame, task, progress) is QueueVerdict.QUEUED
    assert len(q) == 4
    t.backlog = 0
    await q.flush()
    assert t.sent == ["a2", "b2", "aS", "a4"]


async def test_too_many_queued_frames_overflow_once() -> None:
    """Past the frame bound the connection is given up (once), and nothing more is queued."""
    t = FakeTransport()
    q = make(t, max_frames=3)
    t.backlog = HIGH_WATER + 1
    verdicts = [await q.put(f"s{i}", "a", False) for i in range(6)]
    assert verdicts[:3] == [QueueVerdict.QUEUED] * 3
    assert set(verdicts[3:]) == {QueueVerdict.OVERFLOW}
    assert t.overflows == 1 and len(q) == 0
    await q.close()


async def test_frames_left_unread_too_long_overflow() -> None:
    """A queued frame older than max_wait gives the connection up."""
    t = FakeTransport()
    q = make(t, max_wait=0.0)
    t.backlog = HIGH_WATER + 1
    await q.put("s0", "a", False)
    assert await q.put("s1", "b", False) is QueueVerdict.OVERFLOW
    assert t.overflows == 1
    await q.close()
