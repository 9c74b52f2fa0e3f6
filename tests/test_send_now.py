"""The protocol's one-call text frame (consumers/server/ws_protocol.py send_text_now): the bytes it
writes are the frame a WebSocket client parses, at every length encoding; and it
declines whenever autobahn's full path must run."""

from __future__ import annotations

from typing import Any

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from consumers.server.ws_protocol import TaskPulseWebSocketProtocol


class Transport:
    def __init__(self) -> None:
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data


def protocol(**options: Any) -> tuple[Any, Transport]:
    proto: Any = TaskPulseWebSocketProtocol.__new__(TaskPulseWebSocketProtocol)
    transport = Transport()
    proto.transport = transport
    proto.state = TaskPulseWebSocketProtocol.STATE_OPEN
    proto._perMessageCompress = None
    # autobahn's options: per instance here, shadowing what the class holds once a
    # server has started (share_factory_options)
    proto.__dict__.update({"autoFragmentSize": 0, "maskServerFrames": False,
                           "maxMessagePayloadSize": 64 * 1024, **options})
    return proto, transport


def parse(data: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        assert reader.at_eof(), "bytes left after the frame"
        return frame
    raise AssertionError("incomplete frame")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 300, 65535, 65536, 70000])
def test_a_written_frame_is_the_text_a_client_reads(size: int) -> None:
    """7-bit, 16-bit and 64-bit lengths; non-ASCII text counts in bytes."""
    proto, transport = protocol(maxMessagePayloadSize=0)  # 0: no limit
    text = ("é" + "x" * size)[:size] if size else ""
    assert proto.send_text_now(text) is True
    frame = parse(transport.written)
    assert frame.opcode is Opcode.TEXT and frame.fin
    assert bytes(frame.data).decode() == text


@pytest.mark.parametrize("state, options", [
    ({"state": TaskPulseWebSocketProtocol.STATE_CLOSING}, {}),
    ({"_perMessageCompress": object()}, {}),
    ({}, {"autoFragmentSize": 1000}),
    ({}, {"maskServerFrames": True}),
    ({}, {"maxMessagePayloadSize": 10}),
])
def test_it_declines_when_autobahn_must_do_it(state: dict[str, Any],
                                              options: dict[str, Any]) -> None:
    """Closing, compression, fragmentation, masking, or over the size limit:
    nothing is written, and the caller sends through the ASGI send instead."""
    proto, transport = protocol(**options)
    for name, value in state.items():
        setattr(proto, name, value)
    assert proto.send_text_now("x" * 20) is False
    assert transport.written == b""
