"""Which master the sentinels' answers name (progress/store/sentinel.py choose()); the
real fail-overs are in tests/test_sentinel.py."""

import pytest
from redis.sentinel import MasterNotFoundError

from progress.store.sentinel import Answer, choose, remember

OLD, NEW = ("10.0.0.1", 6379), ("10.0.0.2", 6379)
SETTLED = frozenset({"master"})
FAILING_OVER = frozenset({"master", "failover_in_progress"})


def test_the_leader_naming_the_promoted_replica_wins() -> None:
    """The sentinel leading a planned fail-over names the promoted replica (a newer
    configuration epoch) while the others still name the old master: the new one wins."""
    found = choose([Answer(NEW, 2, FAILING_OVER), Answer(OLD, 1, SETTLED),
                    Answer(OLD, 1, SETTLED)], "m")
    assert found.master == NEW
    assert not found.settled


def test_a_flagged_answer_loses_to_settled_ones_of_the_same_epoch() -> None:
    """Within one configuration epoch, the address sentinels name without a fail-over
    flag wins over one named by more sentinels in a fail-over."""
    found = choose([Answer(OLD, 1, FAILING_OVER), Answer(OLD, 1, FAILING_OVER),
                    Answer(NEW, 1, SETTLED)], "m")
    assert found.master == NEW


def test_a_silent_sentinel_is_left_out() -> None:
    """Sentinels that do not answer are skipped; every answer agreeing is settled."""
    found = choose([None, Answer(NEW, 3, SETTLED), Answer(NEW, 3, SETTLED)], "m")
    assert found.master == NEW and found.settled


def test_no_answer_is_no_master() -> None:
    """No sentinel answering raises redis-py's MasterNotFoundError (a ConnectionError)."""
    with pytest.raises(MasterNotFoundError):
        choose([None, None], "m")


def test_a_survey_missing_the_leader_does_not_move_back() -> None:
    """Once told of the promoted replica, a process keeps it when a later survey misses
    the leading sentinel (the others still name the old master), and follows sentinels
    that all answer alike again (set up afresh, their epochs start over)."""
    addresses = frozenset({("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3)})
    name = "test-remember"
    assert remember(addresses, name, choose([Answer(NEW, 2, FAILING_OVER),
                                             Answer(OLD, 1, SETTLED),
                                             Answer(OLD, 1, SETTLED)], name)) == NEW
    assert remember(addresses, name, choose([None, Answer(OLD, 1, SETTLED),
                                             Answer(OLD, 1, SETTLED)], name)) == NEW
    assert remember(addresses, name, choose([Answer(OLD, 0, SETTLED)] * 3, name)) == OLD
