"""Who a client is, for the per-client limits: behind a trusted proxy (an address, a
network, or a Unix socket declared "unix") the client X-Forwarded-For names, never
the entry a client wrote itself; an IPv6 client by its /64; and a socket that holds
no subscription is closed (4011) after TASKPULSE_IDLE_SOCKET_TIMEOUT."""

from __future__ import annotations

import asyncio
import functools
import http.client
import ipaddress
import logging
import socket
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import websockets
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from consumers.clients import believe_nearest_hop, client_of_scope
from consumers.server.serve import daphne_args
from progress.control import clients
from progress.control.clients import UNKNOWN_CLIENT, client_address
from progress.tokens import issue_token
from progress.wire import close_codes
from tests import processes
from tests.client import RECV_TIMEOUT, Http, Ws, connect

PREFIX = "tpident"
START_RATE = "2/m"
IDLE_TIMEOUT = 1.0
START_BODY = {"task": "demo.count", "kwargs": {"steps": 1, "delay": 0}}


# -- Unit: client_address -----------------------------------------------------------


def test_a_trusted_network_names_the_client() -> None:
    """TASKPULSE_TRUSTED_PROXIES takes networks: a proxy anywhere in 10.0.0.0/8 is believed,
    and the walk from the right skips every hop inside it."""
    with override_settings(TASKPULSE_TRUSTED_PROXIES=["10.0.0.0/8"]):
        assert client_address("10.1.2.3", "203.0.113.5, 10.0.0.7") == "203.0.113.5"
        assert client_address("192.0.2.1", "203.0.113.5") == "192.0.2.1"


def test_a_unix_socket_peer_is_a_proxy_only_when_declared() -> None:
    """With no peer address (a Unix socket) every client is "unknown" unless "unix" is
    listed; then the proxy's X-Forwarded-For names each one."""
    assert client_address(None, "203.0.113.5") == UNKNOWN_CLIENT
    with override_settings(TASKPULSE_TRUSTED_PROXIES=["unix"]):
        assert client_address(None, "203.0.113.5") == "203.0.113.5"
        assert client_address(None, "198.51.100.1, 203.0.113.6") == "203.0.113.6"
        assert client_address(None, None) == UNKNOWN_CLIENT
        # "unix" trusts a Unix-socket peer, not a TCP one.
        assert client_address("192.0.2.1", "203.0.113.5") == "192.0.2.1"
    with override_settings(TASKPULSE_TRUSTED_PROXIES="unix, 10.0.0.0/8"):  # a string too
        assert client_address(None, "203.0.113.5") == "203.0.113.5"


def test_a_spoofed_leftmost_entry_is_not_believed() -> None:
    """Behind one trusted proxy the client is the entry that proxy appended, whatever
    the client put in front of it."""
    with override_settings(TASKPULSE_TRUSTED_PROXIES=["127.0.0.1"]):
        names = {client_address("127.0.0.1", f"6.6.6.{i}, 203.0.113.5") for i in range(20)}
    assert names == {"203.0.113.5"}


def test_ipv6_clients_are_named_by_their_64() -> None:
    """2,000 addresses in one /64 are one client; another /64 is another; the prefix is
    TASKPULSE_IPV6_PREFIX; an IPv4 address mapped into IPv6 is the IPv4 client."""
    subnet = ipaddress.IPv6Network("2001:db8:1:2::/64")
    peers = [str(subnet[i * 7919 + 1]) for i in range(2000)]
    assert len({client_address(peer, None) for peer in peers}) == 1
    assert client_address("2001:db8:1:3::1", None) != client_address(peers[0], None)
    assert client_address("::ffff:192.0.2.9", None) == "192.0.2.9"
    with override_settings(TASKPULSE_TRUSTED_PROXIES=["fd00::/8"]):
        assert client_address("fd00::1", f"{peers[5]}, fd00::2") == "2001:db8:1:2::/64"
    with override_settings(TASKPULSE_IPV6_PREFIX=128):
        assert len({client_address(peer, None) for peer in peers[:50]}) == 50


def test_a_bad_trusted_proxy_says_what_to_write() -> None:
    """An entry that is no address, network or "unix" is refused, naming the forms."""
    with override_settings(TASKPULSE_TRUSTED_PROXIES=["nginx.internal"]), \
            pytest.raises(ImproperlyConfigured, match=r'a network .* or "unix"'):
        client_address("10.0.0.1", "203.0.113.5")
    with override_settings(TASKPULSE_IPV6_PREFIX=0), \
            pytest.raises(ImproperlyConfigured, match="1 to 128"):
        client_address("2001:db8::1", None)


def test_one_untrusted_proxy_in_front_is_logged_once(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """When the first requests all come from one private peer carrying X-Forwarded-For
    that TASKPULSE_TRUSTED_PROXIES does not list, one WARNING says which setting to set."""
    monkeypatch.setattr(clients, "lone_proxy_watch", clients.LoneProxyWatch())
    with caplog.at_level(logging.WARNING, logger=clients.__name__):
        for i in range(3 * clients.LONE_PROXY_REQUESTS):
            client_address(None, f"203.0.113.{i % 250}")
    warnings = [r for r in caplog.records if r.name == clients.__name__]
    assert len(warnings) == 1
    assert "TASKPULSE_TRUSTED_PROXIES" in warnings[0].getMessage()
    assert '"unix"' in warnings[0].getMessage()


def test_a_public_peer_ends_the_watch(monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture) -> None:
    """A direct visitor among the first requests means no proxy stands in front: no warning."""
    monkeypatch.setattr(clients, "lone_proxy_watch", clients.LoneProxyWatch())
    with caplog.at_level(logging.WARNING, logger=clients.__name__):
        client_address("203.0.113.9", None)
        for _ in range(2 * clients.LONE_PROXY_REQUESTS):
            client_address("127.0.0.1", "203.0.113.5")
    assert not [r for r in caplog.records if r.name == clients.__name__]


def test_the_launcher_takes_the_entry_the_proxy_appended() -> None:
    """Under --proxy-headers the scope's client becomes the last X-Forwarded-For entry
    (daphne had put the first, which the client wrote), and so does the client's name."""
    scope: dict[str, Any] = {
        "client": ["6.6.6.6", 0],  # daphne's pick
        "headers": [(b"x-forwarded-for", b"6.6.6.6, 203.0.113.5")],
    }
    believe_nearest_hop(scope, "X-Forwarded-For")
    assert scope["client"][0] == "203.0.113.5"
    assert client_of_scope(scope) == "203.0.113.5"


def test_the_launcher_on_a_unix_socket_listens_there_only() -> None:
    """`consumers.serve ... -u path` (behind nginx) adds no TCP port of its own, as
    daphne's -u means "rather than a host and port"."""
    argv = daphne_args([processes.ASGI_APPLICATION, "-u", "/run/taskpulse.sock"])
    assert "--port" not in argv and "--bind" not in argv
    assert "--port" in daphne_args([processes.ASGI_APPLICATION])


# -- Integration: a real launcher ----------------------------------------------------


class UnixConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket, as nginx talks to daphne there."""

    def __init__(self, path: str, host: str, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


class UnixHandler(urllib.request.HTTPHandler):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.unix_path = path

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(UnixConnection, self.unix_path), req)


def unix_http(path: str) -> Http:
    """A browser-like HTTP client (cookies, CSRF) that reaches daphne's Unix socket."""
    client = Http("http://localhost")
    client.opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(client.jar), UnixHandler(path))
    return client


def start_as(client: Http, forwarded_for: str) -> int:
    """Start a demo task through a proxy that says the request came from `forwarded_for`."""
    headers = {"Content-Type": "application/json", "X-CSRFToken": client.csrf(),
               "X-Forwarded-For": forwarded_for}
    status, _ = client.request("POST", "/api/tasks/", START_BODY, headers)
    return status


def launcher(env: dict[str, str], *args: str) -> tuple[processes.Proc, int]:
    """`python -m consumers.serve` with these options, up and answering; its TCP port."""
    port = processes.free_port()
    argv = [sys.executable, "-m", "consumers.serve", processes.ASGI_APPLICATION,
            "--port", str(port), *args]
    proc = processes.Proc(f"launcher:{port}", argv, env).start()
    try:
        processes.wait_http_ok(f"{processes.http_url(port)}/healthz", proc=proc)
    except Exception:
        proc.stop()
        raise
    return proc, port


@pytest.fixture
def identity_env(redis_client: redis.Redis) -> Iterator[dict[str, str]]:
    """A stack environment of this module's own prefix, with a small start rate."""
    processes.delete_prefixed(redis_client, PREFIX)
    yield processes.stack_env(PREFIX, PREFIX, {"TASKPULSE_START_RATE": START_RATE,
                                               "TASKPULSE_TRUSTED_PROXIES": ""})
    processes.delete_prefixed(redis_client, PREFIX)


def unix_launcher(env: dict[str, str], path: Path, trusted: str) -> processes.Proc:
    proc, _ = launcher({**env, "TASKPULSE_TRUSTED_PROXIES": trusted,
                        "TASKPULSE_MAX_SOCKETS_PER_CLIENT": "1"}, "-u", str(path))
    return proc


async def socket_cap_code(path: Path, forwarded_for: str) -> int | None:
    """The close code a second socket from `forwarded_for` gets while a first one, from
    another address, is open (None: it was let in)."""
    uri = f"ws://localhost{processes.WS_PATH}"
    async with websockets.unix_connect(str(path), uri, additional_headers={
            "X-Forwarded-For": "192.0.2.200"}) as first:
        ws = Ws(first)
        await ws.send({"type": "ping", "id": 1})
        assert (await ws.recv())["type"] == "pong"
        async with websockets.unix_connect(str(path), uri, additional_headers={
                "X-Forwarded-For": forwarded_for}) as second:
            try:
                await Ws(second).send({"type": "ping", "id": 2})
                await Ws(second).recv()
            except websockets.ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None
            return None


@pytest.mark.integration
@pytest.mark.parametrize("trusted", ["unix", ""])
async def test_clients_behind_a_unix_socket_proxy(trusted: str, identity_env: dict[str, str],
                                                  tmp_path: Path) -> None:
    """daphne on a Unix socket behind a proxy: with "unix" trusted, two clients the proxy
    names differently have a start budget and a socket cap each; without it they share one."""
    path = tmp_path / "daphne.sock"
    with processes.running(proc := unix_launcher(identity_env, path, trusted)):
        one, two = unix_http(str(path)), unix_http(str(path))
        assert [start_as(one, "198.51.100.1") for _ in range(2)] == [202, 202]
        separate = trusted == "unix"
        assert start_as(two, "198.51.100.2") == (202 if separate else 429), proc.output()
        code = await socket_cap_code(path, "198.51.100.3")
        assert code == (None if separate else close_codes.TOO_MANY_SOCKETS), proc.output()


@pytest.mark.integration
def test_the_launcher_does_not_believe_a_client_written_entry(
        identity_env: dict[str, str]) -> None:
    """`consumers.serve --proxy-headers`: a client that writes a fresh X-Forwarded-For
    per request in front of the proxy's entry still has one start budget."""
    proc, port = launcher(identity_env, "--proxy-headers")
    with processes.running(proc):
        client = Http(processes.http_url(port))
        statuses = [start_as(client, f"6.6.6.{i}, 198.51.100.50") for i in range(3)]
        assert statuses == [202, 202, 429], proc.output()
        assert start_as(client, "6.6.6.9, 198.51.100.51") == 202  # another real client


@pytest.fixture
def idle_launcher(identity_env: dict[str, str]) -> Iterator[str]:
    """A launcher that closes sockets without a subscription after IDLE_TIMEOUT; its URL."""
    env = {**identity_env, "TASKPULSE_IDLE_SOCKET_TIMEOUT": str(IDLE_TIMEOUT)}
    proc, port = launcher(env)
    with processes.running(proc):
        yield processes.ws_url(port)


async def close_code(ws: Ws, within: float) -> int | None:
    """The code the server closes `ws` with in `within` seconds (frames before it skipped)."""
    try:
        async with asyncio.timeout(within):
            while True:
                await ws.recv(within)
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


@pytest.mark.integration
async def test_a_socket_without_a_subscription_is_closed_when_idle(idle_launcher: str) -> None:
    """A socket that never subscribes is closed with 4011 after the idle timeout; one
    holding a subscription stays open, until its last subscription ends."""
    task_id = f"t-idle-{uuid.uuid4().hex[:8]}"
    async with connect(idle_launcher) as idle_conn, connect(idle_launcher) as busy_conn:
        idle, busy = Ws(idle_conn), Ws(busy_conn)
        await busy.subscribe(task_id, issue_token(task_id))
        assert (await busy.recv())["type"] == "snapshot"
        assert await close_code(idle, IDLE_TIMEOUT + RECV_TIMEOUT) == close_codes.IDLE
        await asyncio.sleep(IDLE_TIMEOUT)
        await busy.send({"type": "ping", "id": "still"})
        assert (await busy.recv())["id"] == "still"
        await busy.send({"type": "unsubscribe", "task_id": task_id})
        assert (await busy.recv())["type"] == "unsubscribed"
        assert await close_code(busy, IDLE_TIMEOUT + RECV_TIMEOUT) == close_codes.IDLE
