"""The progress throttle: coalescing, the trailing flush and cancel handling (no Redis)."""

import json
import threading
import time
from collections.abc import Iterator

import pytest
from django.test import override_settings

from progress.publisher.reporter import TaskCancelled, TaskProgress
from progress.store.records import EventDraft, PublishOutcome
from progress.wire.states import State

INTERVAL = 0.05
WAIT = 5.0


class Sink:
    """Stands in for the publisher: keeps every draft, answers as Redis would."""

    def __init__(self) -> None:
        self.drafts: list[EventDraft] = []
        self.fractions: list[float | None] = []
        self.cancel = False
        self.published = threading.Event()

    def __call__(self, draft: EventDraft, fraction: float | None) -> PublishOutcome:
        self.drafts.append(draft)
        self.fractions.append(fraction)
        self.published.set()
        return PublishOutcome(len(self.drafts), self.cancel, draft.state.value)

    def progress(self, index: int = -1) -> dict[str, object]:
        progress = self.drafts[index].progress
        assert progress is not None
        return {name: json.loads(value) for name, value in progress._asdict().items()}

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + WAIT
        while len(self.drafts) < count:
            assert time.monotonic() < deadline, f"only {len(self.drafts)} of {count} publishes"
            time.sleep(0.005)


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def reporter(sink: Sink) -> Iterator[TaskProgress]:
    with override_settings(TASKPULSE_MIN_INTERVAL=INTERVAL, TASKPULSE_ASYNCRESULT=False):
        progress = TaskProgress("unit-throttle", sink, "tests.unit")
    yield progress
    progress.close(flush=False)


def test_first_call_publishes_at_once(reporter: TaskProgress, sink: Sink) -> None:
    """The first progress call goes out immediately, as a PROGRESS event."""
    reporter.update(1, total=10, message="one")
    assert len(sink.drafts) == 1 and sink.drafts[0].state is State.PROGRESS
    assert sink.progress()["progress"] == {
        "current": 1, "total": 10, "percent": 10.0, "message": "one"}
    assert sink.fractions == [0.1]


def test_calls_within_interval_coalesce_and_newest_arrives(
        reporter: TaskProgress, sink: Sink) -> None:
    """Thousands of calls in one interval publish once now and once (the newest) after it."""
    for i in range(1, 5001):
        reporter.update(i, total=5000, message=f"row {i}")
    assert len(sink.drafts) == 1
    sink.wait_for(2)  # the trailing flush, with no further call from the task
    time.sleep(INTERVAL * 2)
    assert len(sink.drafts) == 2
    assert sink.progress()["progress"] == {
        "current": 5000, "total": 5000, "percent": 100.0, "message": "row 5000"}


def test_published_at_most_every_interval(reporter: TaskProgress, sink: Sink) -> None:
    """A steady stream of calls publishes about once per interval, not once per call."""
    started = time.monotonic()
    calls = 0
    while time.monotonic() - started < INTERVAL * 6:
        reporter.advance()
        calls += 1
    assert calls > 100
    assert 2 <= len(sink.drafts) <= 8


def test_indeterminate_progress(reporter: TaskProgress, sink: Sink) -> None:
    """total=None means unknown: percent and eta are null, the fraction unknown."""
    reporter.update(3, total=None, message="counting")
    obj = sink.progress()
    assert obj["progress"] == {"current": 3, "total": None, "percent": None,
                               "message": "counting"}
    assert obj["eta"] is None and sink.fractions == [None]


def test_left_out_arguments_keep_their_values(reporter: TaskProgress, sink: Sink) -> None:
    """update() without total/message keeps them; meta replaces the previous meta."""
    reporter.update(1, total=4, message="a", meta={"k": 1})
    reporter.flush()
    time.sleep(INTERVAL)
    reporter.update(2)
    obj = sink.progress()
    assert obj["progress"] == {"current": 2, "total": 4, "percent": 50.0, "message": "a"}
    assert obj["meta"] == {"k": 1}


def test_meta_must_be_a_dict(reporter: TaskProgress) -> None:
    """A non-dict meta is refused at the call, with a message saying what to pass."""
    with pytest.raises(TypeError, match="meta must be a dict"):
        reporter.update(1, meta=["nope"])  # type: ignore[arg-type]


def test_flush_publishes_held_back_values(reporter: TaskProgress, sink: Sink) -> None:
    """flush() sends what the throttle held back, at once."""
    reporter.update(1, total=3)
    reporter.update(2)
    reporter.flush()
    assert [sink.progress(i)["progress"]["current"] for i in (0, 1)] == [1, 2]  # type: ignore[index]


def test_context_manager_flushes_on_exit(reporter: TaskProgress, sink: Sink) -> None:
    """Leaving `with reporter:` publishes the last values."""
    with reporter as progress:
        for i in range(1, 101):
            progress.update(i, total=100)
    assert sink.progress()["progress"]["current"] == 100  # type: ignore[index]


def test_cancel_raises_at_next_call(reporter: TaskProgress, sink: Sink) -> None:
    """A published call that learns of a cancel raises TaskCancelled."""
    sink.cancel = True
    with pytest.raises(TaskCancelled):
        reporter.update(1, total=10)


def test_cancel_seen_by_trailing_flush_raises_in_the_task(
        reporter: TaskProgress, sink: Sink) -> None:
    """A cancel the trailing flush learns of is raised by the task's next (throttled) call."""
    reporter.update(1, total=10)
    sink.cancel = True
    reporter.update(2)  # held back
    sink.wait_for(2)
    time.sleep(0.01)
    with pytest.raises(TaskCancelled):
        reporter.update(3)


def test_threads_share_one_reporter(reporter: TaskProgress, sink: Sink) -> None:
    """advance() from several threads loses no increment."""
    def work() -> None:
        for _ in range(5000):
            reporter.advance()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    reporter.flush()
    assert reporter.current == 20000
    assert sink.progress()["progress"]["current"] == 20000  # type: ignore[index]


def test_closed_reporter_publishes_nothing_more(reporter: TaskProgress, sink: Sink) -> None:
    """After close() (the task ended) the trailing flush stays silent."""
    reporter.update(1, total=10)
    reporter.update(2)
    reporter.close(flush=True)
    count = len(sink.drafts)
    time.sleep(INTERVAL * 3)
    assert len(sink.drafts) == count == 2


def test_eta_is_carried(reporter: TaskProgress, sink: Sink) -> None:
    """After a few published calls at a steady pace the event carries an ETA."""
    for i in range(1, 6):
        reporter.update(i * 10, total=100)
        reporter.flush()
        time.sleep(INTERVAL * 1.2)
    eta = sink.progress()["eta"]
    assert isinstance(eta, float) and eta > 0
