"""JSON encoding of what tasks hand us: results, meta, errors and timestamps.

Nothing here may raise on odd input: a result that is not JSON, too big, or
whose repr() fails still becomes something we can store and send.
"""

import json
import re
import reprlib
import time
from datetime import UTC, datetime
from typing import Any

from progress.wire.types import ErrorInfo

REPR_LIMIT = 2000

_repr = reprlib.Repr()
_repr.maxstring = REPR_LIMIT
_repr.maxother = REPR_LIMIT
_repr.maxlevel = 4


LONE_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT_CHARACTER = "\ufffd"

# One encoder for the process: json.dumps() with non-default options builds a
# new JSONEncoder per call, a visible share of a published progress call.
_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: Any) -> str:
    """Compact, strict JSON (no NaN/Infinity: browsers cannot parse them), always
    encodable as UTF-8: a lone surrogate in a string becomes U+FFFD."""
    text = _encoder.encode(value)
    if text.isascii():  # the common case, checked in C at memory speed
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return LONE_SURROGATE.sub(REPLACEMENT_CHARACTER, text)
    return text


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(text: str | bytes) -> Any:
    """Parse JSON as browsers write it: NaN and Infinity are refused (ValueError),
    and so is nesting deeper than Python parses (RecursionError becomes ValueError)."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def safe_repr(value: Any) -> str:
    try:
        text = _repr.repr(value)
    except Exception as exc:  # a broken __repr__ must not fail the task
        text = f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"
    return text[:REPR_LIMIT]


def truncated(value: Any) -> dict[str, Any]:
    return {"repr": safe_repr(value), "truncated": True}


def encode_json_value(value: Any, max_bytes: int) -> str:
    """JSON for `value`, or for its truncated repr when it is not JSON or too large."""
    try:
        text = dumps(value)
    except (TypeError, ValueError, RecursionError):
        return dumps(truncated(value))
    if len(text.encode()) > max_bytes:
        return dumps(truncated(value))
    return text


def error_info(exc: BaseException | None, traceback_text: str | None = None) -> ErrorInfo:
    if exc is None:
        return {"type": "Error", "message": ""}
    info: ErrorInfo = {"type": type(exc).__name__, "message": safe_repr_message(exc)}
    if traceback_text:
        info["traceback"] = traceback_text[-8000:]
    return info


def safe_repr_message(exc: BaseException) -> str:
    try:
        return str(exc)[:REPR_LIMIT]
    except Exception:
        return safe_repr(exc)


_second_cache: tuple[int, str] = (-1, "")


def utc_now_iso() -> str:
    """ISO 8601 UTC with microseconds, as PROTOCOL.md §3 `updated_at`."""
    global _second_cache
    # Formatting the date part is most of the cost, and it changes once a second.
    now = time.time()
    second = int(now)
    cached_second, prefix = _second_cache
    if second != cached_second:
        prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second_cache = (second, prefix)
    return f"{prefix}.{int((now - second) * 1_000_000):06d}Z"
