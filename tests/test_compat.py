"""Upgrade safety of the internals TaskPulse relies on (progress/compat.py,
consumers/compat.py; docs/GUARANTEES.md, "Stock daphne and uvicorn").

- Every guard finds, in the installed releases, every attribute its tuned path
  touches, and every installed release is in its tested range: a release that
  changes them fails here first (then widen the range in progress/compat.py only
  once the whole suite passed with it).
- A release outside the range, or a missing attribute, turns the tuning off with
  one log line, and the public path runs instead: each fallback is exercised, and
  a real daphne started with every guard forced off (TASKPULSE_UNTESTED=*)
  still delivers subscribe -> progress -> SUCCESS and still bounds a slow reader.
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import websockets
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from consumers import compat as web_compat
from consumers.base import InboxConsumer, SendWatch
from consumers.layer import RECONNECTED_TYPE, ResyncingPubSubChannelLayer
from consumers.outbox import HIGH_WATER
from consumers.send_backlog import PausedFlag, readable, unwritten_bytes
from consumers.subscriber import _PubSubLink, _SocketLink
from progress import compat
from progress.integrations.celery.compat import CELERY_STATE
from progress.store import keys, shards
from progress.store.script_runner import SCRIPT_RUNNER, ScriptRunner
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

GUARDS = {guard.name: guard for guard in (*web_compat.GUARDS, SCRIPT_RUNNER, shards.SHARD_HASH,
                                           CELERY_STATE)}
SLOW_READER_TIMEOUT = 3.0
# ~24 MB of progress frames (messages are cut at PROGRESS_MESSAGE_MAX_CHARS, 1000), far
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


@pytest.mark.parametrize("distribution", sorted(compat.TESTED))
def test_installed_release_is_in_its_tested_range(distribution: str) -> None:
    """The suite runs against the releases progress/compat.py says it ran against."""
    assert compat.version_problem(distribution) is None


@pytest.mark.parametrize("name", sorted(GUARDS))
def test_every_relied_on_attribute_exists(name: str) -> None:
    """Each attribute, method and per-connection field a tuned path touches is there."""
    assert GUARDS[name].problems() == []


def test_release_ranges() -> None:
    assert compat.release("26.10.2rc1") == (26, 10, 2)
    assert compat.release("4.2") == (4, 2)
    assert compat.release("nonsense") == ()


@pytest.mark.parametrize("version, problem", [
    ("4.2.3", False), ("4.2.9", False), ("4.2.2", True), ("4.3.0", True), ("5.0", True)])
def test_daphne_range(monkeypatch: pytest.MonkeyPatch, version: str, problem: bool) -> None:
    monkeypatch.setattr(compat, "installed_version", lambda _name: version)
    assert (compat.version_problem("daphne") is not None) is problem


def test_untested_release_turns_the_tuning_off_with_one_log_line(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A release outside the range: the guard is off, says why once, and stays decided."""
    real = compat.installed_version
    monkeypatch.setattr(compat, "installed_version",
                        lambda name: "27.1.0" if name == "Twisted" else real(name))
    with caplog.at_level(logging.WARNING, logger="progress.compat"):
        first = compat.check(web_compat.DIRECT_WRITE)
        again = compat.check(web_compat.DIRECT_WRITE)
    assert not first.enabled and again is first
    assert "Twisted 27.1.0 is outside the tested range >=26.10,<26.11" in first.reason
    lines = [r.getMessage() for r in caplog.records if "direct socket writes" in r.getMessage()]
    assert len(lines) == 1 and "Twisted's own TCP transport" in lines[0]


def test_missing_attribute_turns_the_tuning_off() -> None:
    guard = compat.Guard(name="probe", fallback="none", distributions=(),
                         requires=("twisted.internet.tcp:Server.noSuchMethod",),
                         assigns=(("daphne.server:Server.run", ("noSuchField",)),))
    assert guard.problems() == ["twisted.internet.tcp:Server.noSuchMethod is gone",
                                "daphne.server:Server.run: self.noSuchField is gone"]
    assert not compat.check(guard).enabled


def test_environment_forces_untested(monkeypatch: pytest.MonkeyPatch) -> None:
    force_untested(monkeypatch, "channels_redis", "Twisted")
    assert "TASKPULSE_UNTESTED" in (compat.version_problem("channels-redis") or "")
    assert compat.version_problem("daphne") is None
    force_untested(monkeypatch, "*")
    assert all(compat.version_problem(name) for name in compat.TESTED)


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
        assert isinstance(shard._link, _SocketLink if tuned else _PubSubLink)
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
        monkeypatch.setattr(shards, "_consistent_hash", lambda value, n: (len(value) + 1) % n)
    shards._shard_of.cache_clear()
    with override_settings(TASKPULSE_SHARDS=SHARD_URLS):
        assert (shards.shard_hash() is shards._tested_hash) is hash_changed
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
        monkeypatch.setattr(shards, "_consistent_hash", None)  # a release that removed it
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

WEB_GUARDS_OFF = (web_compat.LEAN_PROTOCOL, web_compat.CLOSE_CODES, web_compat.DAPHNE_SERVER,
                  web_compat.DIRECT_WRITE, web_compat.SEND_BACKLOG, web_compat.CONSUMER_LOOP,
                  web_compat.SUBSCRIBER_SOCKET)
FIREHOSE_ENV = {"PROGRESS_MIN_INTERVAL": "0",
                "PROGRESS_SLOW_READER_TIMEOUT": str(SLOW_READER_TIMEOUT)}


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
        web = processes.Proc("daphne-tls", [sys.executable, "-m", "consumers.serve",
                                            processes.ASGI_APPLICATION, "-e", endpoint],
                             stack.env).start()
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
