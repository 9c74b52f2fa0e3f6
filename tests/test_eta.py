"""Rate and ETA estimation from recent progress (pure logic)."""

import pytest

from progress.publisher.eta import RateEstimator


def test_no_estimate_before_two_samples() -> None:
    """One sample gives neither a rate nor an ETA."""
    est = RateEstimator()
    est.observe(0.0, 0)
    assert est.rate() is None and est.eta(0, 100) is None


def test_steady_rate_gives_eta() -> None:
    """10 units/s with 50 left is 5 s."""
    est = RateEstimator()
    for i in range(6):
        est.observe(i * 0.5, i * 5)
    assert est.rate() == pytest.approx(10.0)
    assert est.eta(25, 75) == pytest.approx(5.0)


def test_rate_follows_recent_window() -> None:
    """After a slowdown the rate reflects the last window, not the whole run."""
    est = RateEstimator(window=2.0)
    for i in range(11):  # fast: 100/s for 1 s
        est.observe(i * 0.1, i * 10)
    for i in range(1, 31):  # then 1/s for 3 s
        est.observe(1.0 + i * 0.1, 100 + i * 0.1)
    rate = est.rate()
    assert rate is not None and rate == pytest.approx(1.0, rel=0.2)


def test_indeterminate_and_done() -> None:
    """No total: no ETA; current reached total: ETA 0."""
    est = RateEstimator()
    est.observe(0.0, 0)
    est.observe(1.0, 10)
    assert est.eta(10, None) is None
    assert est.eta(10, 10) == 0.0


def test_progress_going_back_resets() -> None:
    """A restart (progress decreasing) discards the old samples."""
    est = RateEstimator()
    est.observe(0.0, 50)
    est.observe(1.0, 60)
    est.observe(2.0, 0)
    assert est.rate() is None


def test_stalled_task_has_no_eta() -> None:
    """No progress over the window: rate 0, ETA unknown rather than infinite."""
    est = RateEstimator()
    est.observe(0.0, 10)
    est.observe(5.0, 10)
    assert est.rate() == 0.0 and est.eta(10, 20) is None
