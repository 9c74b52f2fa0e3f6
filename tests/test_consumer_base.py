"""consumers/base.py's consumer, on Channels' own loop and on the launcher's one-inbox
loop (consumers/server/consumer_loop.py), with each kind of channel layer Channels
allows: TaskPulse's (the launcher's loop reads the layer's inbox), another one (read
as Channels does), and none."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.test import override_settings

from consumers.base import InboxConsumer
from tests.launcher_tunings import install_launcher_tunings

LAYERS = {
    "taskpulse": {"BACKEND": "consumers.layer.ResyncingPubSubChannelLayer",
                  "CONFIG": {"hosts": ["redis://127.0.0.1:6379/0"], "prefix": "tpbase"}},
    "memory": {"BACKEND": "channels.layers.InMemoryChannelLayer"},
}


class Echo(InboxConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=f"echo {text_data}")
        if self.channel_layer is not None:
            await self.channel_layer.send(self.channel_name, {"type": "note", "text": "noted"})

    async def note(self, message: dict[str, Any]) -> None:
        await self.send(text_data=message["text"])


@pytest.mark.parametrize("loop", ["channels", "launcher"])
@pytest.mark.parametrize("alias", ["taskpulse", "memory", "absent"])
async def test_client_and_layer_messages_reach_the_handlers_in_order(
        alias: str, loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if loop == "launcher":
        assert install_launcher_tunings(monkeypatch).consumer_loop is not None
    from channels.layers import channel_layers

    inputs: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[dict[str, Any]] = []
    with override_settings(CHANNEL_LAYERS=LAYERS):
        channel_layers.backends.clear()
        consumer = Echo()
        consumer.channel_layer_alias = alias

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        app = asyncio.create_task(consumer({"type": "websocket", "path": "/", "headers": []},
                                           inputs.get, send))
        per_frame = ["echo {}", "noted"] if alias != "absent" else ["echo {}"]
        expected: list[str] = []
        inputs.put_nowait({"type": "websocket.connect"})
        for text in ("one", "two"):
            inputs.put_nowait({"type": "websocket.receive", "text": text})
            expected += [line.format(text) for line in per_frame]
            async with asyncio.timeout(5):
                while len(sent) < 1 + len(expected):  # the accept, then the frames
                    await asyncio.sleep(0.01)
        inputs.put_nowait({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(app, 5)  # the loop ends on disconnect
        channel_layers.backends.clear()
    assert sent[0]["type"] == "websocket.accept"
    assert [m["text"] for m in sent[1:]] == expected
