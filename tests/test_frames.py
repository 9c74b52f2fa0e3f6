"""Client frame validation (PROTOCOL.md §4 Errors), in the documented order."""

import pytest

from consumers.frames import Cancel, FrameError, Ping, Subscribe, Unsubscribe, parse_frame
from progress.wire.errors import ErrorCode


def code_of(text: str) -> ErrorCode:
    with pytest.raises(FrameError) as caught:
        parse_frame(text)
    return caught.value.code


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{not json", ErrorCode.BAD_JSON),
        ("", ErrorCode.BAD_JSON),
        ("[1,2]", ErrorCode.BAD_FRAME),
        ('"subscribe"', ErrorCode.BAD_FRAME),
        ("{}", ErrorCode.BAD_FRAME),
        ('{"type": 5}', ErrorCode.BAD_FRAME),
        ('{"type": "nope"}', ErrorCode.UNKNOWN_TYPE),
        ('{"type": "nope", "task_id": 7}', ErrorCode.BAD_FRAME),
        ('{"type": "subscribe"}', ErrorCode.BAD_FRAME),
        ('{"type": "subscribe", "task_id": "a", "since": -1, "epoch": "e"}', ErrorCode.BAD_FRAME),
        ('{"type": "subscribe", "task_id": "a", "since": true, "epoch": "e"}', ErrorCode.BAD_FRAME),
        ('{"type": "subscribe", "task_id": "a", "since": 3}', ErrorCode.BAD_FRAME),
        ('{"type": "subscribe", "task_id": "a", "token": 1}', ErrorCode.BAD_FRAME),
        ('{"type": "subscribe", "task_id": "a b"}', ErrorCode.BAD_TASK_ID),
        ('{"type": "subscribe", "task_id": ""}', ErrorCode.BAD_TASK_ID),
        ('{"type": "unsubscribe", "task_id": "' + "x" * 81 + '"}', ErrorCode.BAD_TASK_ID),
        ('{"type": "ping", "id": {"a": 1}}', ErrorCode.BAD_FRAME),
    ],
)
def test_bad_frames_get_their_code(text: str, code: ErrorCode) -> None:
    """Each malformed frame is refused with the code PROTOCOL.md names."""
    assert code_of(text) is code


def test_shape_is_checked_before_type() -> None:
    """A wrong-typed field is bad_frame even when the type is unknown too."""
    assert code_of('{"type": "nope", "since": "x"}') is ErrorCode.BAD_FRAME


def test_error_carries_the_task_id_when_known() -> None:
    """An error about a task names it, so a multiplexing client can route it."""
    with pytest.raises(FrameError) as caught:
        parse_frame('{"type": "subscribe", "task_id": "bad id!"}')
    assert caught.value.task_id == "bad id!"


def test_valid_frames_parse() -> None:
    """Well-formed frames become typed objects; a missing token is left for `forbidden`."""
    assert parse_frame('{"type":"subscribe","task_id":"t1","token":"k"}') == Subscribe("t1", "k")
    assert parse_frame('{"type":"subscribe","task_id":"t1"}') == Subscribe("t1", "")
    assert parse_frame(
        '{"type":"subscribe","task_id":"t1","token":"k","since":4,"epoch":"e"}'
    ) == Subscribe("t1", "k", 4, "e")
    assert parse_frame('{"type":"unsubscribe","task_id":"t1"}') == Unsubscribe("t1")
    assert parse_frame('{"type":"cancel","task_id":"t1","token":"k"}') == Cancel("t1", "k")
    assert parse_frame('{"type":"ping","id":42}') == Ping(42)
    assert parse_frame('{"type":"ping"}') == Ping(None)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(constant: str) -> None:
    """NaN/Infinity in a frame are bad_json (they used to be accepted and echoed back as
    invalid JSON, e.g. in a pong's id)."""
    with pytest.raises(FrameError) as refused:
        parse_frame('{"type": "ping", "id": ' + constant + "}")
    assert refused.value.code == ErrorCode.BAD_JSON
