"""Task states of PROTOCOL.md §2, defined once."""

from enum import StrEnum


class State(StrEnum):
    PENDING = "PENDING"
    STARTED = "STARTED"
    PROGRESS = "PROGRESS"
    RETRY = "RETRY"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"
    LOST = "LOST"


# Not a record state: what a snapshot says when no record exists.
UNKNOWN = "UNKNOWN"

FINAL_STATES = frozenset({State.SUCCESS, State.FAILURE, State.REVOKED, State.LOST})


def is_final(state: str) -> bool:
    return state in FINAL_STATES
