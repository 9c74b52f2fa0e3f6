"""Upgrade safety of the internals TaskPulse relies on (progress/compat.py,
consumers/server/compat.py; docs/GUARANTEES.md, "Stock daphne and uvicorn").

- Every guard finds, in the installed releases (whichever they are: run this with
  a new release installed), every attribute and signature its tuned path relies
  on, and its self-tests pass.
- A release the suite did not run with keeps its tunings; it is only reported.
- A missing attribute, a changed signature or a failing self-test turns the tuning
  off with one log line saying which check failed, and the public path runs
  instead: each fallback is exercised, and a real daphne started with every guard
  forced off (TASKPULSE_UNTESTED=*) still delivers subscribe -> progress -> SUCCESS
  and still bounds a slow reader.
- The shard hash has no fallback for a channels_redis layer: start-up is refused.
- Under TLS the slow-reader bound holds (the backlog is read through the TLS layer).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import socket
import ssl
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import websockets
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from consumers.base import InboxConsumer, SendWatch
from consumers.layer import RECONNECTED_TYPE, ResyncingPubSubChannelLayer
from consumers.outbox import HIGH_WATER
from consumers.server import compat as web_compat
from consumers.server.send_backlog import PausedFlag, readable, unwritten_bytes
from consumers.server.socket_link import SocketLink
from consumers.subscriber import PubSubLink
from progress import compat
from progress.integrations.celery.compat import CELERY_STATE
from progress.store import keys, shards
from progress.store.script_runner import ScriptRunner
from progress.store.tuned import channels_redis_hash
from progress.store.tuned.channels_redis_hash import SHARD_HASH
from progress.store.tuned.script_socket import SCRIPT_RUNNER
from progress.tokens import issue_token
from tests import processes
from tests.conftest import REDIS_URL
from tests.faultkit import (
    PrivateStack,
    Watcher,
    own_redis,
    private_stack,
    restart_redis,
    resume_to_final,
    rss_kib,
    send_task,
)
from tests.launcher_tunings import install_launcher_tunings

GUARDS = {guard.name: guard for guard in (*web_compat.GUARDS, SCRIPT_RUNNER, SHARD_HASH,
                                           CELERY_STATE)}
SLOW_READER_TIMEOUT = 3.0
# ~24 MB of progress frames (messages are cut at TASKPULSE_MESSAGE_MAX_CHARS, 1000), far
# more than any socket buffer holds
STEPS, PAD = 20_000, 1000
RSS_GROWTH_LIMIT_KIB = 16 * 1024


@pytest.fixture(autouse=True)
def fresh_verdicts() -> Iterator[None]:
    """Each test decides the guards anew, and leaves them undecided."""
    compat.forget()
    yield
    compat.forget()


def force_untested(monkeypatch: pytest.MonkeyPatch, *distributions: str) -> None:
    monkeypatch.setenv(compat.UNTESTED_ENV, ",".join(distributions))
    compat.forget()


# -- What the guards check ------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(GUARDS))
def test_every_relied_on_attribute_exists(name: str) -> None:
    """Each attribute, signature and self-tested behaviour a tuned path relies on is
    there in the installed releases, whichever they are."""
    assert GUARDS[name].problems() == []


def test_tested_releases_are_the_constraints() -> None:
    """progress/compat.py TESTED says what the suite runs with: requirements/constraints.txt."""
    pins = dict(line.split("==") for line in
                (processes.ROOT / "requirements" / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    pinned = {name.lower().replace("_", "-"): version for name, version in pins.items()}
    assert {name: pinned.get(name.lower()) for name in compat.TESTED} == compat.TESTED


def installed_as(monkeypatch: pytest.MonkeyPatch, distribution: str, version: str) -> None:
    real = compat.installed_version
    monkeypatch.setattr(compat, "installed_version",
                        lambda name: version if name == distribution else real(name))


def test_untested_release_keeps_its_tuning(monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """A release the suite did not run with, that still has everything a guard checks,
    keeps the tuning: the version is reported, never the reason a tuning is off."""
    installed_as(monkeypatch, "Twisted", "27.1.0")
    with caplog.at_level(logging.WARNING, logger="progress.compat"):
        assert compat.check(web_compat.DIRECT_WRITE).enabled
    assert not [r for r in caplog.records if "turned off" in r.getMessage()]
    assert compat.describe_release("Twisted") == (
        f"Twisted 27.1.0 (untested: the suite ran with {compat.TESTED['Twisted']})")


def test_start_up_line_names_untested_releases(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    installed_as(monkeypatch, "autobahn", "99.1.0")
    with caplog.at_level(logging.INFO):
        verdicts = web_compat.check_all()
    assert all(verdict.enabled for verdict in verdicts.values())
    [line] = [r.getMessage() for r in caplog.records if "tunings on" in r.getMessage()]
    assert f"{len(verdicts)} of {len(verdicts)} tunings on" in line
    assert "autobahn 99.1.0 (untested: the suite ran with" in line


@pytest.fixture
def fake_library(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A stand-in library a guard relies on: a class with a method and a function."""
    module = types.ModuleType("fake_library")

    class Transport:
        def __init__(self) -> None:
            self.buffered = b""

        def write(self, data: bytes) -> None:
            self.buffered += data

    def connect(url: str, timeout: float = 1.0) -> Transport:
        return Transport()

    module.Transport = Transport  # type: ignore[attr-defined]
    module.connect = connect  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module


def fake_guard(*extra: Any) -> compat.Guard:
    return compat.Guard(
        name="fake tuning", fallback="the fake public path", distributions=("pytest",),
        requires=("fake_library:Transport.write",),
        assigns=(("fake_library:Transport.__init__", ("buffered",)),),
        overrides=(("fake_library:Transport.write", "(self, data)"),),
        calls=(("fake_library:connect", "url, timeout="),),
        extra=extra)


def off_lines(caplog: pytest.LogCaptureFixture, guard: compat.Guard) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if f"turned off {guard.name}:" in r.getMessage()]


def test_fake_guard_passes_as_declared(fake_library: types.ModuleType) -> None:
    assert fake_guard().problems() == []


def _sets_nothing(self: Any) -> None:
    """A constructor that no longer sets what the tuning reads."""


@pytest.mark.parametrize("change, problem", [
    (lambda lib: delattr(lib.Transport, "write"), "fake_library:Transport.write is gone"),
    (lambda lib: setattr(lib.Transport, "__init__", _sets_nothing),
     "fake_library:Transport.__init__: self.buffered is gone"),
    (lambda lib: setattr(lib.Transport, "write", lambda self, data, flush: None),
     "fake_library:Transport.write takes (self, data, flush), not (self, data)"),
    (lambda lib: setattr(lib, "connect", lambda url, deadline=1.0: None),
     "fake_library:connect(url, deadline) no longer takes (url, timeout=)"),
], ids=["attribute", "assigned", "override", "call"])
def test_a_changed_library_turns_the_tuning_off_with_one_line(
        fake_library: types.ModuleType, caplog: pytest.LogCaptureFixture,
        change: Any, problem: str) -> None:
    """A release that removed an attribute or changed a signature: the public path, and
    one line saying which check failed and what runs instead."""
    change(fake_library)
    guard = fake_guard()
    with caplog.at_level(logging.WARNING, logger="progress.compat"):
        first, again = compat.check(guard), compat.check(guard)
    assert not first.enabled and again is first
    assert problem in first.reason
    [line] = off_lines(caplog, guard)
    assert "the fake public path" in line and problem in line


def test_a_failing_self_test_turns_the_tuning_off(
        fake_library: types.ModuleType, caplog: pytest.LogCaptureFixture) -> None:
    def writes_through() -> list[str]:
        transport = fake_library.connect("x")
        transport.write(b"frame")
        return [] if transport.buffered == b"" else ["writes are buffered, not sent"]

    guard = fake_guard(writes_through)
    with caplog.at_level(logging.WARNING, logger="progress.compat"):
        assert not compat.enabled(guard)
    assert "writes are buffered, not sent" in off_lines(caplog, guard)[0]


def test_environment_forces_the_public_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """TASKPULSE_UNTESTED names distributions (or *): their tunings are off whatever
    is installed."""
    force_untested(monkeypatch, "channels_redis", "Twisted")
    assert "TASKPULSE_UNTESTED names Twisted" in compat.check(web_compat.SEND_BACKLOG).reason
    assert not compat.enabled(SHARD_HASH)
    assert compat.enabled(web_compat.DAPHNE_SERVER)
    force_untested(monkeypatch, "*")
    assert not any(compat.enabled(guard) for guard in GUARDS.values() if guard.distributions)


# -- Self-tests catch what attributes and signatures cannot ---------------------------------


def test_frame_self_test_catches_other_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lean protocol writes a frame autobahn would not: the lean protocol is off."""
    from consumers.server import ws_protocol

    monkeypatch.setattr(ws_protocol, "TEXT_FRAME_FIN", 0x01)  # FIN bit lost
    assert "send_text_now writes a 5-character message unlike autobahn" in (
        compat.check(web_compat.LEAN_PROTOCOL).reason)


def test_backlog_self_test_catches_a_miscount(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Twisted that keeps the bytes it moved into its byte buffer counted in
    `_tempDataLen` too: the count is off, so is the tuning (the producer API reads the
    backlog instead)."""
    from twisted.internet import abstract

    real: Any = abstract.FileDescriptor.doWrite

    def counts_twice(self: Any) -> Any:
        result = real(self)
        self._tempDataLen = len(self.dataBuffer) - self.offset
        return result

    monkeypatch.setattr(abstract.FileDescriptor, "doWrite", counts_twice)
    assert "unwritten_bytes reads" in compat.check(web_compat.SEND_BACKLOG).reason


def test_direct_write_self_test_catches_reordering(monkeypatch: pytest.MonkeyPatch) -> None:
    """A direct write that does not wait behind what Twisted still holds: off."""
    from twisted.internet import tcp

    from consumers.server.direct_write import DirectWriteServer

    def always_at_once(self: Any, data: bytes) -> None:
        sent = self.writeSomeData(data)
        if sent < len(data):
            tcp.Server.write(self, data[sent:])  # type: ignore[no-untyped-call]

    monkeypatch.setattr(DirectWriteServer, "write", always_at_once)
    assert not compat.enabled(web_compat.DIRECT_WRITE)


def test_publisher_self_test_catches_an_unread_handshake_reply(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A redis-py that leaves a reply of its connection handshake unread (the direct
    EVALSHA would take it for the answer to its first call): the public client is used."""
    from redis import connection

    real = connection.AbstractConnection.on_connect_check_health

    def reply_left_unread(self: Any, check_health: bool = True) -> None:
        real(self, check_health)
        self.send_command("CLIENT", "NO-EVICT", "on", check_health=False)

    monkeypatch.setattr(connection.AbstractConnection, "on_connect_check_health",
                        reply_left_unread)
    assert "read b'+OK\\r\\n+P' off redis-py's socket after PING" in (
        compat.check(SCRIPT_RUNNER).reason)


def test_subscriber_self_test_catches_a_transport_it_cannot_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A redis-py whose connected transport no longer delivers to the protocol set on
    it (here: reading paused): redis-py's PubSub reads the layer's connection."""
    from redis.asyncio import connection

    real: Any = connection.AbstractConnection.connect

    async def paused(self: Any) -> None:
        await real(self)
        self._writer.transport.pause_reading()

    monkeypatch.setattr(connection.AbstractConnection, "connect", paused)
    assert "nothing came through redis-py's asyncio transport" in (
        compat.check(web_compat.SUBSCRIBER_SOCKET).reason)


def test_a_real_guard_in_a_fresh_process_says_which_check_failed(tmp_path: Path) -> None:
    """The launcher's start-up on an autobahn whose sendData grew a parameter: the lean
    protocol is off with one line naming the check; the other tunings stay on."""
    script = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(message)s')\n"
        "from autobahn.websocket import protocol\n"
        "real = protocol.WebSocketProtocol.sendData\n"
        "def sendData(self, data, sync=False, chopsize=None, flush=True):\n"
        "    return real(self, data, sync, chopsize)\n"
        "protocol.WebSocketProtocol.sendData = sendData\n"
        "from consumers.server import compat\n"
        "compat.check_all()\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={**os.environ,
                                                      "PYTHONPATH": str(processes.ROOT)})
    assert done.returncode == 0, done.stderr
    [off] = [line for line in done.stdout.splitlines() if "turned off" in line]
    assert web_compat.LEAN_PROTOCOL.name in off
    assert "sendData takes (self, data, sync, chopsize, flush), not " \
           "(self, data, sync, chopsize)" in off
    count = len(web_compat.GUARDS)
    assert f"{count - 1} of {count} tunings on" in done.stdout


# -- Each fallback works -----------------------------------------------------------------


@pytest.mark.parametrize("tuned", [True, False], ids=["direct", "client"])
def test_script_runner_paths_agree(monkeypatch: pytest.MonkeyPatch, redis_client: redis.Redis,
                                   tuned: bool) -> None:
    """The publisher's direct EVALSHA and redis-py's client (the fallback) give the same
    replies, load the script when Redis lacks it, and pipeline `many`."""
    if not tuned:
        force_untested(monkeypatch, "redis")
    script = f"-- {__name__} {tuned} {datetime.datetime.now().isoformat()}\n" \
             "return {KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]) + 1}"
    runner = ScriptRunner(REDIS_URL, script)
    try:
        assert (runner._client is None) is tuned
        assert runner(["k"], ["b", 41], leading=["a"]) == [b"k", b"a", b"b", 42]
        assert runner.many([(["k1"], [1], ["x", "y"]), (["k2"], [2], ["x", "z"])]) == [
            [b"k1", b"x", b"y", 2], [b"k2", b"x", b"z", 3]]
    finally:
        runner.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, processes.Proc]]:
    with own_redis(str(tmp_path), persistent=False) as found:
        yield found


@pytest.mark.parametrize("tuned", [True, False], ids=["hiredis", "pubsub"])
async def test_channel_layer_paths_keep_their_promises(
        monkeypatch: pytest.MonkeyPatch, private_redis: tuple[str, processes.Proc],
        tuned: bool) -> None:
    """hiredis on the socket, or redis-py's PubSub (the fallback): group_add returns once
    Redis confirmed it, and a Redis restart is announced after the re-subscription."""
    if not tuned:
        force_untested(monkeypatch, "redis")
    install_launcher_tunings(monkeypatch)
    url, server = private_redis
    publisher = redis.Redis.from_url(url)
    layer = ResyncingPubSubChannelLayer(hosts=[url], prefix="tpcompat")
    try:
        channel = await layer.new_channel()
        for i in range(100):
            await layer.group_add(f"g{i}", channel)
            publisher.publish(f"tpcompat__group__g{i}", layer.serialize({"type": "e", "i": i}))
            assert await asyncio.wait_for(layer.receive(channel), 5) == {"type": "e", "i": i}
        [shard] = layer._get_layer()._shards
        assert isinstance(shard._link, SocketLink if tuned else PubSubLink)
        await asyncio.to_thread(restart_redis, server, 0.5)
        assert await asyncio.wait_for(layer.receive(channel), 30) == {"type": RECONNECTED_TYPE}
        publisher.publish("tpcompat__group__g7", layer.serialize({"type": "after"}))
        assert (await asyncio.wait_for(layer.receive(channel), 10))["type"] == "after"
    finally:
        await layer.flush()
        publisher.close()


@pytest.mark.parametrize("tuned", [True, False], ids=["hiredis", "pubsub"])
async def test_unreachable_redis_fails_group_add(monkeypatch: pytest.MonkeyPatch,
                                                 tuned: bool) -> None:
    if not tuned:
        force_untested(monkeypatch, "redis")
    install_launcher_tunings(monkeypatch)
    layer = ResyncingPubSubChannelLayer(hosts=[f"redis://127.0.0.1:{processes.free_port()}/0"])
    try:
        channel = await layer.new_channel()
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(layer.group_add("g", channel), 10)
    finally:
        await layer.flush()


class Echo(InboxConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=f"echo {text_data}")


@pytest.mark.parametrize("tuned", [True, False], ids=["inbox", "channels"])
async def test_consumer_loop_paths(monkeypatch: pytest.MonkeyPatch, tuned: bool) -> None:
    """The one-inbox loop, or Channels' own (the fallback), serve the same consumer; on a
    server with no backlog extension the consumer adds its own (SendWatch)."""
    import channels.consumer

    if not tuned:
        force_untested(monkeypatch, "channels")
    install_launcher_tunings(monkeypatch)
    used: list[bool] = []
    real = channels.consumer.await_many_dispatch

    async def spy(*args: Any) -> None:
        used.append(True)
        await real(*args)

    monkeypatch.setattr(channels.consumer, "await_many_dispatch", spy)
    inputs: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    consumer = Echo()
    consumer.channel_layer_alias = "absent"
    app = asyncio.create_task(consumer({"type": "websocket", "path": "/", "headers": []},
                                       inputs.get, send))
    for message in ({"type": "websocket.connect"}, {"type": "websocket.receive", "text": "1"},
                    {"type": "websocket.disconnect", "code": 1000}):
        inputs.put_nowait(message)
    await asyncio.wait_for(app, 5)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send"]
    assert used == ([] if tuned else [True])
    assert "taskpulse.send_backlog" in consumer.scope["extensions"]


async def test_send_watch_finishes_a_held_send_in_the_background() -> None:
    """A send the server holds (uvicorn, transport paused) returns at once and reads as a
    full backlog until the server finishes it; frames stay in order."""
    writable = asyncio.Event()
    written: list[str] = []

    async def server_send(message: dict[str, Any]) -> None:
        await writable.wait()
        written.append(message.get("text", message["type"]))

    watch = SendWatch(server_send)
    writable.set()
    await watch.send({"type": "websocket.send", "text": "a"})
    assert written == ["a"] and watch.backlog() == 0
    writable.clear()
    await asyncio.wait_for(watch.send({"type": "websocket.send", "text": "b"}), 1)
    assert written == ["a"] and watch.backlog() > HIGH_WATER
    third = asyncio.ensure_future(watch.send({"type": "websocket.send", "text": "c"}))
    await asyncio.sleep(0.05)
    assert not third.done()  # waits for "b"
    writable.set()
    await asyncio.wait_for(third, 1)
    await asyncio.sleep(0)
    assert written == ["a", "b", "c"] and watch.backlog() == 0


async def test_send_watch_drops_what_follows_the_close() -> None:
    """A close the server refused (stock daphne: 1008) leaves the socket open for the
    1000 that follows; after a close nothing more is sent (uvicorn raises for it)."""
    sent: list[dict[str, Any]] = []

    async def server_send(message: dict[str, Any]) -> None:
        if message.get("code") == 1008:
            raise ValueError("invalid close code 1008")
        sent.append(message)

    watch = SendWatch(server_send)
    with pytest.raises(ValueError):
        await watch.send({"type": "websocket.close", "code": 1008})
    await watch.send({"type": "websocket.close", "code": 1000})
    await watch.send({"type": "websocket.send", "text": "late"})
    await watch.send({"type": "websocket.close", "code": 1000})
    assert sent == [{"type": "websocket.close", "code": 1000}]


class FakeTcp:
    def __init__(self, buffered: bytes, offset: int = 0, temp: int = 0) -> None:
        self.dataBuffer, self.offset, self._tempDataLen = buffered, offset, temp
        self.producer: Any = object()

    def unregisterProducer(self) -> None:
        self.producer = None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        assert self.producer is None and streaming
        self.producer = producer


def test_backlog_is_read_through_tls() -> None:
    """Under TLS: the TLS layer's pending plaintext plus the TCP buffer below it."""
    from twisted.protocols.tls import TLSMemoryBIOProtocol

    tls: Any = TLSMemoryBIOProtocol.__new__(TLSMemoryBIOProtocol)
    tls._appSendBuffer = [b"abc", b"de"]
    tls.transport = FakeTcp(b"x" * 100, offset=10, temp=7)
    assert readable(tls) and unwritten_bytes(tls) == 5 + 90 + 7
    assert not readable(object())


def test_paused_flag_is_the_public_backlog() -> None:
    transport = FakeTcp(b"")
    flag = PausedFlag.watch(transport)
    assert transport.producer is flag and flag.backlog() == 0
    flag.pauseProducing()
    assert flag.backlog() > HIGH_WATER
    flag.resumeProducing()
    assert flag.backlog() == 0


# -- The shard hash: records land where the layer listens ----------------------------------

SHARD_URLS = [f"redis://127.0.0.1:{port}/0" for port in (7001, 7002, 7003)]


def layer_shard(layer: ResyncingPubSubChannelLayer, task_id: str) -> int:
    loop_layer = layer._get_layer()
    return loop_layer._shards.index(loop_layer._get_shard(keys.group_channel(task_id)))


@pytest.mark.parametrize("hash_changed", [False, True], ids=["tested", "changed"])
async def test_layer_and_records_pick_the_same_shard(monkeypatch: pytest.MonkeyPatch,
                                                     hash_changed: bool) -> None:
    """TaskPulse's layer subscribes a group where the record script publishes it, with
    channels_redis' hash or (if a release changed it) with TaskPulse's copy."""
    if hash_changed:
        monkeypatch.setattr(channels_redis_hash, "_consistent_hash",
                            lambda value, n: (len(value) + 1) % n)
    shards._shard_of.cache_clear()
    with override_settings(TASKPULSE_SHARDS=SHARD_URLS):
        assert (shards.shard_hash() is channels_redis_hash.tested_hash) is hash_changed
        shards.check_shard_hash()  # TaskPulse's own layer: never refused
        layer = ResyncingPubSubChannelLayer(hosts=SHARD_URLS, prefix="tp")
        ids = [f"task-{i}" for i in range(200)]
        assert [layer_shard(layer, t) for t in ids] == [shards.shard_of(t) for t in ids]
        assert len({shards.shard_of(t) for t in ids}) == len(SHARD_URLS)


def test_changed_hash_with_a_channels_redis_layer_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from progress import conf

    def stock(hosts: list[str]) -> dict[str, Any]:
        return {conf.channel_layer_alias(): {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": hosts, "prefix": conf.key_prefix()}}}

    with override_settings(TASKPULSE_SHARDS=SHARD_URLS, CHANNEL_LAYERS=stock(SHARD_URLS)):
        shards.check_shard_hash()  # the tested hash: fine
        # a release that removed it
        monkeypatch.setattr(channels_redis_hash, "_consistent_hash", None)
        compat.forget()
        with pytest.raises(ImproperlyConfigured, match="cannot shard over 3 Redis servers"):
            shards.check_shard_hash()
    with override_settings(TASKPULSE_SHARDS=SHARD_URLS[:1], CHANNEL_LAYERS=stock(SHARD_URLS[:1])):
        shards.check_shard_hash()  # one server: nothing to place


# -- The launcher's command line -------------------------------------------------------------


def launcher(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "consumers.serve", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_launcher_needs_the_application_path(tmp_path: Path) -> None:
    """`python -m consumers.serve` takes the host's application as daphne does."""
    done = launcher([], tmp_path, {**os.environ, "PYTHONPATH": str(processes.ROOT)})
    assert done.returncode == 2 and "application" in done.stderr


def test_launcher_reads_the_hosts_settings_module(tmp_path: Path) -> None:
    """No project.settings is forced: an application that sets no Django up, with no
    DJANGO_SETTINGS_MODULE, is refused with what to set."""
    (tmp_path / "hostless.py").write_text(
        "async def application(scope, receive, send):\n    pass\n")
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    done = launcher(["hostless:application"], tmp_path,
                    {**env, "PYTHONPATH": str(processes.ROOT)})
    assert done.returncode != 0
    assert "set DJANGO_SETTINGS_MODULE" in done.stderr


# -- Real daphne processes -------------------------------------------------------------------

WEB_GUARDS_OFF = (web_compat.LEAN_PROTOCOL, web_compat.CLOSE_HANDSHAKE, web_compat.DAPHNE_SERVER,
                  web_compat.DIRECT_WRITE, web_compat.SEND_BACKLOG, web_compat.CONSUMER_LOOP,
                  web_compat.SUBSCRIBER_SOCKET)
FIREHOSE_ENV = {"TASKPULSE_MIN_INTERVAL": "0",
                "TASKPULSE_SLOW_READER_TIMEOUT": str(SLOW_READER_TIMEOUT)}


@pytest.fixture(scope="module")
def untested_stack(redis_client: redis.Redis) -> Iterator[PrivateStack]:
    """daphne (consumers/serve.py) and a worker with every guard forced off."""
    with private_stack({**FIREHOSE_ENV, compat.UNTESTED_ENV: "*"}) as running:
        yield running


def turned_off(proc: processes.Proc, guard: compat.Guard) -> list[str]:
    return [line for line in proc.lines if f"turned off {guard.name}:" in line]


async def watch_to_final(url: str, task_id: str, **client: Any) -> list[dict[str, Any]]:
    async with websockets.connect(url, open_timeout=10, **client) as conn:
        await conn.send(json.dumps({"type": "subscribe", "task_id": task_id,
                                    "token": issue_token(task_id)}))
        frames: list[dict[str, Any]] = []
        async with asyncio.timeout(30):
            while not (frames and frames[-1].get("final")):
                frames.append(json.loads(await conn.recv()))
        return frames


async def test_untested_daphne_says_why_once_and_delivers(untested_stack: PrivateStack) -> None:
    """Every tuning off: one start-up line each, and subscribe -> progress in order ->
    SUCCESS over a real WebSocket (the worker publishing through redis-py's client)."""
    web = untested_stack.webs[0]
    for guard in WEB_GUARDS_OFF:
        assert len(turned_off(web, guard)) == 1, (guard.name, web.output())
    task_id = send_task(untested_stack, "tests.slow_steps", steps=5, delay=0.05)
    frames = await watch_to_final(untested_stack.ws(), task_id)
    assert frames[0]["type"] == "snapshot"
    seqs = [f["seq"] for f in frames]
    assert seqs == list(range(seqs[0], seqs[-1] + 1))
    assert frames[-1]["state"] == "SUCCESS" and frames[-1]["result"] == {"steps": 5}
    assert untested_stack.worker is not None
    assert len(turned_off(untested_stack.worker, SCRIPT_RUNNER)) == 1
    # Celery's internals too: the task ran on the public proxies and store_result.
    assert len(turned_off(untested_stack.worker, CELERY_STATE)) == 1


def small_window_socket(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


async def stopped_reader_is_cut_off(url: str, port: int, task_id: str, web: processes.Proc,
                                    **client: Any) -> Watcher:
    """Subscribe, read nothing past the slow-reader timeout, then read: the server must
    have closed the connection before feeding it the whole task (~24 MB), holding far
    less than that meanwhile."""
    watcher = Watcher(allow_progress_skips=True)
    baseline = peak = rss_kib(web.pid)
    async with websockets.connect(url, sock=small_window_socket(port), max_queue=1,
                                  open_timeout=10, max_size=2**20, **client) as conn:
        await conn.send(json.dumps({"type": "subscribe", "task_id": task_id,
                                    "token": issue_token(task_id)}))
        for _ in range(int((SLOW_READER_TIMEOUT + 5) / 0.5)):
            await asyncio.sleep(0.5)
            peak = max(peak, rss_kib(web.pid))
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(30):
                while True:
                    watcher.check(json.loads(await conn.recv()))
    assert task_id not in watcher.final and watcher.frames < STEPS // 4, watcher.frames
    assert peak - baseline < RSS_GROWTH_LIMIT_KIB, (baseline, peak)
    return watcher


async def test_untested_daphne_still_bounds_a_slow_reader(untested_stack: PrivateStack) -> None:
    """The backlog read through Twisted's producer API (the fallback) still cuts off a
    reader that stopped, and it resumes to SUCCESS."""
    task_id = send_task(untested_stack, "tests.chatty", steps=STEPS, pad=PAD)
    watcher = await stopped_reader_is_cut_off(untested_stack.ws(), untested_stack.ports[0],
                                              task_id, untested_stack.webs[0])
    await resume_to_final(untested_stack.ws(), task_id, watcher)


# -- TLS: the slow-reader bound holds -------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def stopped_blocking_reader(port: int, task_id: str, tls: ssl.SSLContext | None,
                            stop_for: float) -> tuple[Watcher, bool]:
    """A client on a blocking socket with a tiny receive window that truly stops reading:
    nothing reads ahead for it (an asyncio client may keep reading, or decrypting, into
    its own buffers). Subscribes, reads nothing for `stop_for` s, then reads to the end;
    the frames, and whether the server cut the connection (True) or the task reached its
    final state (False). No compression is offered."""
    from websockets.client import ClientProtocol
    from websockets.frames import Frame, Opcode
    from websockets.http11 import Response
    from websockets.uri import parse_uri

    watcher = Watcher(allow_progress_skips=True)
    scheme = "ws" if tls is None else "wss"
    client = ClientProtocol(parse_uri(f"{scheme}://127.0.0.1:{port}/ws/progress/"),
                            max_size=2**20)
    raw = small_window_socket(port)
    with raw if tls is None else tls.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.settimeout(30)
        client.send_request(client.connect())
        sock.sendall(b"".join(client.data_to_send()))
        while not any(isinstance(event, Response) for event in client.events_received()):
            client.receive_data(sock.recv(65536))
        client.send_text(json.dumps({"type": "subscribe", "task_id": task_id,
                                     "token": issue_token(task_id)}).encode())
        sock.sendall(b"".join(client.data_to_send()))
        time.sleep(stop_for)
        try:
            while task_id not in watcher.final:
                data = sock.recv(65536)
                if not data:
                    return watcher, True
                client.receive_data(data)
                for frame in client.events_received():
                    assert isinstance(frame, Frame)
                    if frame.opcode is Opcode.TEXT:
                        watcher.check(json.loads(bytes(frame.data)))
                    elif frame.opcode is Opcode.CLOSE:
                        return watcher, True
        except (ConnectionError, ssl.SSLError):
            return watcher, True
    return watcher, False


@pytest.mark.parametrize("untested", ["", "Twisted"], ids=["bytes", "producer"])
async def test_tls_slow_reader_is_bounded(redis_client: redis.Redis, tmp_path: Path,
                                          untested: str) -> None:
    """daphne serving wss: a reader that stops is cut off within the bound and resumes,
    with the backlog read in bytes through the TLS layer, or through Twisted's producer
    API when the guard is off."""
    key, cert = self_signed(tmp_path)
    tls_port, plain_port = processes.free_port(), processes.free_port()
    env = {**FIREHOSE_ENV, compat.UNTESTED_ENV: untested, "PORT": str(plain_port)}
    client_tls = ssl.create_default_context()
    client_tls.check_hostname = False
    client_tls.verify_mode = ssl.CERT_NONE
    with private_stack(env, webs=0) as stack:
        endpoint = (f"ssl:port={tls_port}:interface=127.0.0.1:privateKey={key}"
                    f":certKey={cert}")
        # Named endpoints replace the default port: the plain one serves /healthz.
        plain = f"tcp:port={plain_port}:interface=127.0.0.1"
        web = processes.Proc("daphne-tls", [sys.executable, "-m", "consumers.serve",
                                            processes.ASGI_APPLICATION, "-e", endpoint,
                                            "-e", plain], stack.env).start()
        stack.webs.append(web)
        processes.wait_http_ok(f"http://127.0.0.1:{plain_port}/healthz", proc=web)
        assert len(turned_off(web, web_compat.SEND_BACKLOG)) == (1 if untested else 0)
        task_id = send_task(stack, "tests.chatty", steps=STEPS, pad=PAD)
        baseline = rss_kib(web.pid)
        reading = asyncio.create_task(asyncio.to_thread(
            stopped_blocking_reader, tls_port, task_id, client_tls, SLOW_READER_TIMEOUT + 5))
        peak = baseline
        while not reading.done():
            await asyncio.sleep(0.5)
            peak = max(peak, rss_kib(web.pid))
        watcher, cut = await reading
        assert cut and task_id not in watcher.final and watcher.frames < STEPS // 4
        assert peak - baseline < RSS_GROWTH_LIMIT_KIB, (baseline, peak)
        await resume_to_final(f"wss://127.0.0.1:{tls_port}/ws/progress/", task_id, watcher,
                              ssl=client_tls)
