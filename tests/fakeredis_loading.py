"""Fake servers in front of a real Redis, for replies real servers give rarely and
briefly (next to the real-process tests): `LoadingThenRealServer` answers
`-LOADING` while an AOF replays, `PingRefusingProxy` refuses PING as a loading
server does. `LoadingThenRealServer`: Until `finish_loading()` it accepts
the connection's set-up commands (+OK) and answers every script call with
-LOADING, as a server that restarted under an open connection does; then it
relays bytes to the real server."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Self

LOADING_REPLY = b"-LOADING Redis is loading the dataset in memory\r\n"
OK_REPLY = b"+OK\r\n"
HELLO_REPLY = b"%1\r\n$5\r\nproto\r\n:3\r\n"  # RESP3, as redis-py's HELLO 3 expects
CHUNK = 65536


class _FrontServer:
    """Listens on a free port in front of a real Redis; `_serve` handles each client."""

    def __init__(self, real_host: str, real_port: int) -> None:
        self.real = (real_host, real_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"
        self.stopped = threading.Event()

    def __enter__(self) -> Self:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.stopped.set()
        self.listener.close()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        raise NotImplementedError


class LoadingThenRealServer(_FrontServer):
    def __init__(self, real_host: str, real_port: int) -> None:
        super().__init__(real_host, real_port)
        self.loading = threading.Event()
        self.loading.set()

    def finish_loading(self) -> None:
        self.loading.clear()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            while self.loading.is_set():
                data = conn.recv(CHUNK)
                if not data:
                    return
                if self.loading.is_set():
                    conn.sendall(b"".join(_reply_while_loading(c) for c in _commands_in(data)))
                    continue
                self._relay(conn, data)
                return
            self._relay(conn, b"")

    def _relay(self, conn: socket.socket, first: bytes) -> None:
        with socket.create_connection(self.real) as upstream:
            if first:
                upstream.sendall(first)
            threading.Thread(target=_pipe, args=(upstream, conn), daemon=True).start()
            _pipe(conn, upstream)


def _commands_in(data: bytes) -> list[bytes]:
    """The command names in a buffer of RESP arrays (the first bulk string of each)."""
    lines = data.split(b"\r\n")
    return [lines[i + 2].upper() for i, line in enumerate(lines[:-2]) if line.startswith(b"*")]


def _reply_while_loading(command: bytes) -> bytes:
    if command.startswith(b"EVAL"):
        return LOADING_REPLY
    return HELLO_REPLY if command == b"HELLO" else OK_REPLY


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(CHUNK):
            target.sendall(data)
    except OSError:
        pass


PING_COMMAND = b"*1\r\n$4\r\nPING\r\n"
# What Redis answers an unknown command with an error, as a loading one answers PING.
REFUSED_PING = b"*1\r\n$17\r\nTASKPULSE-NO-PING\r\n"


class PingRefusingProxy(_FrontServer):
    """Relays to a real Redis, but every PING reaches it as an unknown command, so it is
    answered with an error (as a Redis loading its AOF answers PING with -LOADING)
    while SUBSCRIBE works; `drop()` cuts every open connection (a Redis restart)."""

    def __init__(self, real_host: str, real_port: int) -> None:
        super().__init__(real_host, real_port)
        self.open: list[socket.socket] = []

    def __exit__(self, *exc: object | TracebackType) -> None:
        super().__exit__(*exc)
        self.drop()

    def drop(self) -> None:
        for sock in list(self.open):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.open.clear()

    def _serve(self, conn: socket.socket) -> None:
        upstream = socket.create_connection(self.real)
        self.open += [conn, upstream]
        threading.Thread(target=_pipe, args=(upstream, conn), daemon=True).start()
        _pipe_refusing_ping(conn, upstream)


def _pipe_refusing_ping(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(CHUNK):
            target.sendall(data.replace(PING_COMMAND, REFUSED_PING))
    except OSError:
        pass
