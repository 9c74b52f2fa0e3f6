"""Per-subscription delivery verdicts: forward in order, drop duplicates, resync gaps."""

from consumers.limits import RateVerdict, TokenBucket
from progress.wire.delivery import Subscription, Verdict, judge


def test_next_seq_is_forwarded() -> None:
    """The event after the last one sent goes out."""
    assert judge(Subscription("t", "e1", 4), "e1", 5) is Verdict.FORWARD


def test_duplicates_and_stale_events_are_dropped() -> None:
    """An event at or before the last sent seq is never sent again."""
    sub = Subscription("t", "e1", 4)
    assert judge(sub, "e1", 4) is Verdict.DROP
    assert judge(sub, "e1", 2) is Verdict.DROP


def test_gap_triggers_resync() -> None:
    """An event that skips ahead means something was missed."""
    assert judge(Subscription("t", "e1", 4), "e1", 7) is Verdict.RESYNC


def test_new_epoch_triggers_resync() -> None:
    """A recreated record (new epoch) is resynced, never mixed with the old seqs."""
    assert judge(Subscription("t", "e1", 4), "e2", 5) is Verdict.RESYNC


def test_subscription_before_record_accepts_seq_1_only() -> None:
    """Subscribed while UNKNOWN, the first event must be seq 1."""
    assert judge(Subscription("t", None, 0), "e1", 1) is Verdict.FORWARD
    assert judge(Subscription("t", None, 0), "e1", 3) is Verdict.RESYNC


def test_bucket_limits_then_floods() -> None:
    """Over the burst a client is limited; sending on regardless is a flood."""
    bucket = TokenBucket(rate=1, burst=3, flood_strikes=2, stamp=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [RateVerdict.OK] * 3
    assert bucket.take(0.0) is RateVerdict.LIMITED
    assert bucket.take(0.0) is RateVerdict.LIMITED
    assert bucket.take(0.0) is RateVerdict.FLOOD
    assert bucket.take(5.0) is RateVerdict.OK  # refilled
