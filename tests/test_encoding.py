"""Results that are not JSON, or too large, are stored as a truncated repr."""

import datetime
import json

from progress.wire.encoding import encode_json_value, utc_now_iso


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("boom")


def test_json_value_is_kept() -> None:
    """A JSON-serialisable result is stored as it is."""
    value = {"steps": 3, "ok": [1, 2]}
    assert json.loads(encode_json_value(value, 1000)) == value


def test_non_json_value_becomes_repr() -> None:
    """A datetime result becomes its truncated repr."""
    value = datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC)
    out = json.loads(encode_json_value(value, 1000))
    assert out["truncated"] is True and "2026" in out["repr"]


def test_too_large_value_becomes_truncated_repr() -> None:
    """A result over the size limit is cut, never stored whole."""
    out = json.loads(encode_json_value("x" * 100_000, 1000))
    assert out["truncated"] is True and len(out["repr"]) <= 2000


def test_nan_and_broken_repr_do_not_raise() -> None:
    """NaN (invalid JSON) and an object whose repr raises are still encoded."""
    assert json.loads(encode_json_value(float("nan"), 1000))["truncated"] is True
    assert "BadRepr" in json.loads(encode_json_value(BadRepr(), 1000))["repr"]


def test_timestamps_are_utc_with_microseconds() -> None:
    """updated_at is ISO 8601 UTC with microseconds."""
    stamp = utc_now_iso()
    assert stamp.endswith("Z") and len(stamp.split(".")[1]) == 7
