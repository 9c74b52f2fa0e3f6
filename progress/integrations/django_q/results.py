"""What a Django-Q2 worker stores for a failed task, read back as TaskPulse's
`error` (type and message; the traceback only when TASKPULSE_SEND_TRACEBACK allows).
Kept free of Django-Q2's imports, so it is checked without a cluster."""

from __future__ import annotations

from typing import Any

from progress import conf
from progress.publisher import TaskCancelled
from progress.wire.encoding import REPR_LIMIT, safe_repr
from progress.wire.types import ErrorInfo

# The worker stores `f"{exc} : {traceback.format_exc()}"`.
TRACEBACK_MARKER = " : Traceback (most recent call last):\n"
CANCELLED_TYPE = TaskCancelled.__name__


def error_of(result: Any) -> ErrorInfo:
    """The error of a failed task from what its worker stored: `"{exc} : {traceback}"`.

    The exception's type is the last line of the traceback, before `": {exc}"`.
    """
    text = result if isinstance(result, str) else safe_repr(result)
    message, marker, rest = text.partition(TRACEBACK_MARKER)
    if not marker:
        return {"type": "Error", "message": text[:REPR_LIMIT]}
    traceback_text = TRACEBACK_MARKER.lstrip(" :") + rest
    last = traceback_text.rstrip("\n")
    ending = f": {message}"
    if message and last.endswith(ending):
        type_path = last[: -len(ending)].rsplit("\n", 1)[-1]
    else:
        type_path = last.rsplit("\n", 1)[-1].split(":", 1)[0]
    type_name = type_path.strip().rsplit(".", 1)[-1] or "Error"
    info: ErrorInfo = {"type": type_name, "message": message[:REPR_LIMIT]}
    if conf.send_traceback():
        info["traceback"] = traceback_text[-8000:]
    return info
