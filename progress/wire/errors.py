"""Error codes of PROTOCOL.md §4 and §6, defined once for HTTP and WebSocket."""

from enum import StrEnum


class ErrorCode(StrEnum):
    BAD_JSON = "bad_json"
    BAD_FRAME = "bad_frame"
    UNKNOWN_TYPE = "unknown_type"
    BAD_TASK_ID = "bad_task_id"
    FORBIDDEN = "forbidden"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    RATE_LIMITED = "rate_limited"
    NOT_CANCELLABLE = "not_cancellable"
    # HTTP only
    BAD_REQUEST = "bad_request"  # a query the endpoint cannot read (unpaired task/token)
    BAD_ARGUMENTS = "bad_arguments"
    UNKNOWN_TASK = "unknown_task"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"
