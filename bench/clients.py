"""Load-generating clients, each group in its own process (spawned, asyncio).

The client side must not be the bottleneck, so a benchmark splits its sockets
over several `ClientProcess`es. Each one connects, reports "ready", waits for
"go" where a run needs a common start, and returns its measurements.
Latency is measured from each event's `updated_at` (stamped by the publishing
process, PROTOCOL.md §3) to the moment the frame is read, on the same clock.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import random
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

import websockets

CONNECT_TIMEOUT = 30.0
STARTUP_TIMEOUT = 120.0


def stamp_seconds(updated_at: str) -> float:
    """`updated_at` (ISO 8601 UTC, microseconds) as a Unix timestamp."""
    return datetime.fromisoformat(updated_at).timestamp()


def _raise_fds() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Control:
    """The child's end of the parent<->child pipe, usable from asyncio."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def send(self, message: Any) -> None:
        self.conn.send(message)

    async def recv(self) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, self.conn.recv)


def _child_main(conn: Connection, func: Callable[..., Awaitable[Any]],
                args: tuple[Any, ...]) -> None:
    _raise_fds()
    control = Control(conn)
    try:
        result = asyncio.run(func(control, *args))
        conn.send(("result", result))
    except BaseException as exc:  # reported to the parent, which raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


class ClientProcess:
    """One client process running `func(control, *args)`; the parent drives it."""

    def __init__(self, func: Callable[..., Awaitable[Any]], *args: Any) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_child_main, args=(child, func, args), daemon=True)
        self.proc.start()
        child.close()

    def expect(self, tag: str, timeout: float = STARTUP_TIMEOUT) -> Any:
        if not self.conn.poll(timeout):
            raise TimeoutError(f"client process sent no {tag!r} within {timeout}s")
        kind, value = self.conn.recv()
        if kind == "error":
            raise RuntimeError(f"client process failed: {value}")
        if kind != tag:
            raise RuntimeError(f"client process sent {kind!r}, expected {tag!r}")
        return value

    def send(self, message: Any) -> None:
        self.conn.send(message)

    def stop(self) -> None:
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


def split(items: list[Any], parts: int) -> list[list[Any]]:
    return [items[i::parts] for i in range(parts)]


async def _connect(url: str) -> Any:
    return await websockets.connect(url, open_timeout=CONNECT_TIMEOUT, ping_interval=None,
                                    compression=None, max_queue=None, close_timeout=1)


async def _gather_limited(coros: list[Awaitable[Any]], limit: int) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(coro: Awaitable[Any]) -> Any:
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


# ---------------------------------------------------------------- watchers


@dataclass
class WatchResult:
    latencies_ms: list[float] = field(default_factory=list)
    events: int = 0  # event frames received
    gaps: int = 0  # seq jumps (a lost event, or coalescing)
    duplicates: int = 0
    finals: int = 0  # subscriptions that reached their final frame
    subscriptions: int = 0
    cpu_s: float = 0.0  # the client process's CPU time while reading


async def watch(control: Control, url: str, conns: list[list[tuple[str, str]]],
                deadline_s: float) -> WatchResult:
    """Open one socket per entry of `conns`, subscribe each to its (task_id, token)s,
    report ready, then read until every subscription is final or the deadline."""
    result = WatchResult(subscriptions=sum(len(c) for c in conns))
    sockets = await _gather_limited([_connect(url) for _ in conns], 200)

    async def subscribe(ws: Any, subs: list[tuple[str, str]]) -> dict[str, int]:
        last: dict[str, int] = {}
        for task_id, token in subs:
            await ws.send(json.dumps({"type": "subscribe", "task_id": task_id, "token": token}))
        while len(last) < len(subs):
            frame = json.loads(await asyncio.wait_for(ws.recv(), CONNECT_TIMEOUT))
            if frame["type"] == "snapshot":
                last[frame["task_id"]] = frame["seq"]
            elif frame["type"] == "error":
                raise RuntimeError(f"subscribe refused: {frame}")
        return last

    lasts = await _gather_limited([subscribe(ws, s) for ws, s in zip(sockets, conns, strict=True)],
                                  200)
    # Read the measured frames off the sockets' transports directly: the clients
    # share the machine's cores with the server they measure. Through the
    # websockets library (a wait_for per recv) they took ~60 µs of CPU a frame,
    # this way ~45 (1,000 tasks x 1 client at 10 ev/s, BENCHMARKS.md §2).
    readers = [_FrameReader(ws.transport, last, result) for ws, last in zip(sockets, lasts,
                                                                             strict=True)]
    control.send(("ready", len(sockets)))
    cpu_start = time.process_time()
    await asyncio.wait([r.done for r in readers], timeout=deadline_s)
    result.cpu_s = time.process_time() - cpu_start
    for reader in readers:
        reader.transport.abort()
    return result


class _FrameReader(asyncio.Protocol):
    """Takes over an open client socket and tallies its event frames as they arrive.

    Server frames are unmasked (RFC 6455); only text frames are expected here
    (the server pings only after 20 s without traffic, longer than a run)."""

    def __init__(self, transport: Any, last: dict[str, int], result: WatchResult) -> None:
        self.transport = transport
        self.last = last
        self.open_subs = len(last)
        self.result = result
        self.buffer = bytearray()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self.open_subs:
            self.done.set_result(None)
        transport.set_protocol(self)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        pos, end = 0, len(buffer)
        while end - pos >= 2:
            size, head = buffer[pos + 1] & 0x7F, 2
            if size == 126:
                size, head = int.from_bytes(buffer[pos + 2:pos + 4], "big"), 4
            elif size == 127:
                size, head = int.from_bytes(buffer[pos + 2:pos + 10], "big"), 10
            if end - pos < head + size:
                break
            if buffer[pos] & 0x0F == 1:  # text
                self.on_text(bytes(buffer[pos + head:pos + head + size]))
            pos += head + size
        del buffer[:pos]

    def on_text(self, raw: bytes) -> None:
        now = time.time()
        frame = json.loads(raw)
        if frame["type"] != "event":
            return
        result, last = self.result, self.last
        result.latencies_ms.append((now - stamp_seconds(frame["updated_at"])) * 1000)
        result.events += 1
        task_id, seq = frame["task_id"], frame["seq"]
        if seq <= last[task_id]:
            result.duplicates += 1
        elif seq > last[task_id] + 1:
            result.gaps += seq - last[task_id] - 1
        last[task_id] = max(seq, last[task_id])
        if frame["final"]:
            result.finals += 1
            self.open_subs -= 1
            if not self.open_subs and not self.done.done():
                self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)



# ---------------------------------------------------------------- idle sockets


async def hold_idle(control: Control, url: str, subs: list[tuple[str, str]]) -> int:
    """One subscribed socket per (task_id, token); hold them until told to close."""
    sockets = await _gather_limited([_connect(url) for _ in subs], 200)

    async def subscribe(ws: Any, task_id: str, token: str) -> None:
        await ws.send(json.dumps({"type": "subscribe", "task_id": task_id, "token": token}))
        frame = json.loads(await asyncio.wait_for(ws.recv(), CONNECT_TIMEOUT))
        if frame["type"] != "snapshot":
            raise RuntimeError(f"subscribe answered with {frame}")

    await _gather_limited([subscribe(ws, t, k) for ws, (t, k) in zip(sockets, subs, strict=True)],
                          200)
    control.send(("ready", len(sockets)))
    await control.recv()
    await _gather_limited([ws.close() for ws in sockets], 500)
    return len(sockets)


# ---------------------------------------------------------------- storm


@dataclass
class StormResult:
    accepted_s: list[float] = field(default_factory=list)  # handshake done, from the start
    subscribed_s: list[float] = field(default_factory=list)  # snapshot read, from the start
    failures: dict[str, int] = field(default_factory=dict)


async def storm(control: Control, url: str, subs: list[tuple[str, str]], start_at: float,
                hold_s: float) -> StormResult:
    """At wall-clock `start_at`, open every socket at once, subscribe, read the snapshot."""
    result = StormResult()
    control.send(("ready", len(subs)))
    await asyncio.sleep(max(0.0, start_at - time.time()))
    t0 = time.monotonic()
    sockets: list[Any] = []

    async def one(task_id: str, token: str) -> None:
        try:
            ws = await _connect(url)
            result.accepted_s.append(time.monotonic() - t0)
            sockets.append(ws)
            await ws.send(json.dumps({"type": "subscribe", "task_id": task_id, "token": token}))
            frame = json.loads(await asyncio.wait_for(ws.recv(), CONNECT_TIMEOUT))
            if frame["type"] != "snapshot":
                raise RuntimeError(f"first frame {frame['type']}")
            result.subscribed_s.append(time.monotonic() - t0)
        except websockets.InvalidStatus as exc:
            key = f"http_{exc.response.status_code}"
            result.failures[key] = result.failures.get(key, 0) + 1
        except Exception as exc:
            key = type(exc).__name__
            result.failures[key] = result.failures.get(key, 0) + 1

    await asyncio.gather(*(one(t, k) for t, k in subs))
    await asyncio.sleep(hold_s)
    await _gather_limited([ws.close() for ws in sockets], 500)
    return result


# ---------------------------------------------------------------- HTTP pollers


async def _http_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    path: str) -> bytes:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
    return await reader.readexactly(length)


@dataclass
class PollResult:
    latencies_ms: list[float] = field(default_factory=list)  # publish -> first poll seeing it
    updates_seen: int = 0
    requests: int = 0
    errors: int = 0


async def poll(control: Control, port: int, path_fmt: str, task_ids: list[str],
               interval_s: float, deadline_s: float) -> PollResult:
    """celery-progress's client loop: GET the task's progress every `interval_s` until
    it is complete. `description` carries the publish time (see bench_polling)."""
    result = PollResult()
    control.send(("ready", len(task_ids)))
    await control.recv()
    end = time.monotonic() + deadline_s

    async def one(task_id: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        seen = ""
        await asyncio.sleep(random.random() * interval_s)  # browsers load pages at random times
        try:
            while time.monotonic() < end:
                try:
                    body = await _http_get(reader, writer, path_fmt.format(task_id=task_id))
                except (RuntimeError, OSError, asyncio.IncompleteReadError):
                    result.errors += 1
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                now = time.time()
                result.requests += 1
                info = json.loads(body)
                stamp = (info.get("progress") or {}).get("description") or ""
                if stamp and stamp != seen:
                    seen = stamp
                    result.updates_seen += 1
                    result.latencies_ms.append((now - float(stamp)) * 1000)
                if info.get("complete"):
                    return
                # celery-progress's JS sets the next poll's timer when a response arrives.
                await asyncio.sleep(interval_s)
        finally:
            writer.close()

    await asyncio.gather(*(one(t) for t in task_ids))
    return result


def merge_watch(results: list[WatchResult]) -> WatchResult:
    merged = WatchResult()
    for r in results:
        merged.latencies_ms += r.latencies_ms
        merged.events += r.events
        merged.gaps += r.gaps
        merged.duplicates += r.duplicates
        merged.finals += r.finals
        merged.subscriptions += r.subscriptions
        merged.cpu_s += r.cpu_s
    return merged


def run_watchers(url: str, conns: list[list[tuple[str, str]]], processes: int,
                 deadline_s: float, when_ready: Callable[[], None]) -> WatchResult:
    """Spread the sockets over `processes` client processes, call `when_ready` once all
    are subscribed (it starts the publishing), and merge what they measured."""
    groups = [g for g in split(conns, processes) if g]
    clients = [ClientProcess(watch, url, g, deadline_s) for g in groups]
    try:
        for c in clients:
            c.expect("ready")
        when_ready()
        return merge_watch([c.expect("result", deadline_s + 60) for c in clients])
    finally:
        for c in clients:
            c.stop()


# ---------------------------------------------------------------- publishers


@dataclass
class PublishResult:
    published: int = 0
    seconds: float = 0.0
    worst_lag_ms: float = 0.0  # how far behind its schedule the publisher fell


EARLY = 0.001  # s a paced call may run ahead of its slot (fewer, longer sleeps)


def run_paced(count: int, rate: float, result: PublishResult,
              step: Callable[[int], object]) -> None:
    """Call step(k) for k in 0..count-1 on a fixed schedule of `rate` calls/s,
    recording how far behind the schedule the calls fell."""
    t0 = time.monotonic()
    for k in range(count):
        lag = time.monotonic() - (t0 + k / rate)
        if lag < -EARLY:
            time.sleep(-lag)
        elif lag < 0:
            pass  # due within EARLY: go now rather than sleep per call
        else:
            result.worst_lag_ms = max(result.worst_lag_ms, lag * 1000)
        step(k)
        result.published += 1
    result.seconds = time.monotonic() - t0


async def publish_paced(control: Control, env: dict[str, str], task_ids: list[str],
                        rate_per_task: float, duration_s: float) -> PublishResult:
    """Publish progress for every task at `rate_per_task` events/s for `duration_s`,
    then SUCCESS for each, through the project's publisher API (no Celery worker)."""
    import os

    os.environ.update(env)
    import django

    django.setup()
    from progress.publisher import publish, track
    from progress.store.records import EventDraft
    from progress.wire.states import State

    steps = max(1, round(rate_per_task * duration_s))
    total_rate = rate_per_task * len(task_ids)
    result = PublishResult()
    control.send(("ready", len(task_ids)))
    await control.recv()
    reporters = [track(task_id) for task_id in task_ids]  # as a task holds its own
    run_paced(steps * len(task_ids), total_rate, result, lambda k: reporters[
        k % len(task_ids)].update(k // len(task_ids) + 1, total=steps))
    for task_id in task_ids:
        publish(EventDraft(task_id, State.SUCCESS, result_json="null"))
    return result


TICK = 0.005  # s between the batches of publish_batched


async def publish_batched(control: Control, env: dict[str, str], task_ids: list[str],
                          rate_per_task: float, duration_s: float) -> PublishResult:
    """The schedule of `publish_paced`, but each tick's due events go to Redis in one
    pipeline (`progress.publisher.publish_many`): what many worker processes publishing at
    once cost Redis and the server, at a fraction of the load generator's own CPU.
    Each event is still its own record-script run and its own PUBLISH."""
    import os

    os.environ.update(env)
    import django

    django.setup()
    from progress.publisher import publish, publish_many
    from progress.store.records import EventDraft
    from progress.wire.event_json import progress_json
    from progress.wire.states import State

    steps = max(1, round(rate_per_task * duration_s))
    count, rate = steps * len(task_ids), rate_per_task * len(task_ids)
    result = PublishResult()
    control.send(("ready", len(task_ids)))
    await control.recv()
    t0, k = time.monotonic(), 0
    while k < count:
        due = min(count, int((time.monotonic() - t0) * rate) + 1)
        if due <= k:
            time.sleep(TICK)
            continue
        result.worst_lag_ms = max(result.worst_lag_ms,
                                  (time.monotonic() - (t0 + k / rate)) * 1000)
        publish_many([
            EventDraft(task_ids[i % len(task_ids)], State.PROGRESS, progress=(
                progress_json(i // len(task_ids) + 1, steps, None, None, "{}")))
            for i in range(k, due)])
        result.published += due - k
        k = due
    result.seconds = time.monotonic() - t0
    for task_id in task_ids:
        publish(EventDraft(task_id, State.SUCCESS, result_json="null"))
    return result


async def publish_polled(control: Control, env: dict[str, str], task_ids: list[str],
                         rate_per_task: float, duration_s: float) -> PublishResult:
    """The same schedule as `publish_paced`, through celery-progress's ProgressRecorder
    (Celery's result backend); `description` carries the publish time for latency."""
    import os

    os.environ.update(env)
    import django

    django.setup()
    from celery_progress.backend import ProgressRecorder

    from project.celery import app

    class _Task:  # what ProgressRecorder needs of a bound task: Task.update_state
        def __init__(self, task_id: str) -> None:
            self.task_id = task_id

        def update_state(self, state: str, meta: dict[str, Any]) -> None:
            app.backend.store_result(self.task_id, meta, state)

    recorders = {t: ProgressRecorder(_Task(t)) for t in task_ids}
    steps = max(1, round(rate_per_task * duration_s))
    total_rate = rate_per_task * len(task_ids)
    result = PublishResult()
    control.send(("ready", len(task_ids)))
    await control.recv()
    run_paced(steps * len(task_ids), total_rate, result, lambda k: recorders[
        task_ids[k % len(task_ids)]].set_progress(
            k // len(task_ids) + 1, steps, description=f"{time.time():.6f}"))
    for task_id in task_ids:
        app.backend.store_result(task_id, {"done": True}, "SUCCESS")
    return result
