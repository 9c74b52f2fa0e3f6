"""The wall between the protocol side and the server side (issue 16): the protocol side
runs on public APIs unless the launcher installs its tunings (consumers/tuning.py),
and the launcher installs each only while its guard passes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from redis.connection import Connection

from consumers import tuning
from consumers.base import InboxConsumer
from consumers.server.consumer_loop import OneInboxLoop
from consumers.server.socket_link import SocketLink
from consumers.subscriber import PubSubLink, Subscriber
from progress import compat
from progress.store import resp
from tests.launcher_tunings import install_launcher_tunings


@pytest.fixture(autouse=True)
def fresh_guards() -> Iterator[None]:
    compat.forget()
    yield
    compat.forget()


class Echo(InboxConsumer):
    channel_layer_alias = "absent"

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=f"echo {text_data}")


async def run_echo() -> list[dict[str, Any]]:
    inputs: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    app = asyncio.ensure_future(Echo()({"type": "websocket", "path": "/", "headers": []},
                                       inputs.get, send))
    for message in ({"type": "websocket.connect"}, {"type": "websocket.receive", "text": "1"},
                    {"type": "websocket.disconnect", "code": 1000}):
        inputs.put_nowait(message)
    await asyncio.wait_for(app, 5)
    return sent


async def test_nothing_installed_runs_channels_own_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside the launcher (stock daphne, uvicorn) the consumer runs Channels' own loop
    and dispatch, and the layer reads redis-py's PubSub."""
    import channels.consumer

    monkeypatch.setattr(tuning, "INSTALLED", tuning.Installed())
    used: list[str] = []
    real_loop, real_dispatch = channels.consumer.await_many_dispatch, \
        channels.consumer.AsyncConsumer.dispatch

    async def loop_spy(*args: Any) -> None:
        used.append("loop")
        await real_loop(*args)

    async def dispatch_spy(self: Any, message: dict[str, Any]) -> None:
        used.append(message["type"])
        await real_dispatch(self, message)

    monkeypatch.setattr(channels.consumer, "await_many_dispatch", loop_spy)
    monkeypatch.setattr(channels.consumer.AsyncConsumer, "dispatch", dispatch_spy)
    sent = await run_echo()
    assert [m.get("text") for m in sent if m["type"] == "websocket.send"] == ["echo 1"]
    assert used == ["loop", "websocket.connect", "websocket.receive", "websocket.disconnect"]
    subscriber = Subscriber({"address": "redis://127.0.0.1:6379/0"}, lambda *_: None,
                            lambda: None)
    assert subscriber._open_link == PubSubLink.open


async def test_the_launcher_installs_each_tuning_its_guard_passes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The launcher's start-up installs the one-inbox loop and hiredis on the pub/sub
    socket; the same consumer then never enters Channels' loop."""
    import channels.consumer

    installed = install_launcher_tunings(monkeypatch)
    assert isinstance(installed.consumer_loop, OneInboxLoop)
    assert installed.pubsub_link == SocketLink.open
    entered: list[bool] = []
    monkeypatch.setattr(channels.consumer, "await_many_dispatch",
                        lambda *args: entered.append(True))
    sent = await run_echo()
    assert [m.get("text") for m in sent if m["type"] == "websocket.send"] == ["echo 1"]
    assert entered == []


@pytest.mark.parametrize("distribution", ["channels", "redis"])
def test_a_failed_guard_installs_nothing_in_its_place(monkeypatch: pytest.MonkeyPatch,
                                                      distribution: str) -> None:
    """TASKPULSE_UNTESTED (a guard off): that tuning stays out, the other goes in."""
    monkeypatch.setenv(compat.UNTESTED_ENV, distribution)
    installed = install_launcher_tunings(monkeypatch)
    assert (installed.consumer_loop is None) is (distribution == "channels")
    assert (installed.pubsub_link is None) is (distribution == "redis")


@pytest.mark.parametrize("args", [(b"PING",), (b"SUBSCRIBE", b"a", b"b" * 9000),
                                  (b"EVALSHA", b"0" * 40, b"1", "é".encode(), b"")])
def test_the_one_resp_packer_writes_what_redis_py_writes(args: tuple[bytes, ...]) -> None:
    """The packer the script runner and the pub/sub reader share: redis-py's bytes."""
    connection: Any = Connection  # untyped in redis-py
    assert resp.pack(*args) == b"".join(connection().pack_command(*args))
