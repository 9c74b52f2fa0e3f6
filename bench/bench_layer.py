"""The channel layer and the consumer loop alone: channels_redis + Channels as shipped
against TaskPulse's layer and consumer loop, side by side in one process.

    .venv/bin/python -m bench.bench_layer [--rounds 5] [--events 20000]

Real ASGI consumer instances (no web server: their `send` only counts) are
subscribed to groups through each layer; another process PUBLISHes msgpack
events on the groups' channels, as the record script does; the figure is this
process's CPU time per event handed to a consumer's `send`. Two shapes: every
consumer in its own group (1,000 tasks x 1 client) and all in one group
(1 task x many clients). The stock variant is channels_redis'
RedisPubSubChannelLayer with Channels' `AsyncConsumer` loop; both variants
skip Channels' per-message database clean-up (TaskPulse does, and it would
swamp the rest).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
from dataclasses import dataclass
from typing import Any

from bench import report, stack

CONSUMERS = 500
PUBLISHER = """
import sys, time, msgpack, redis
url, prefix, groups, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
r = redis.Redis.from_url(url)
pipe = r.pipeline(transaction=False)
body = "x" * 200
for i in range(n):
    group = i % groups
    pipe.publish(f"{prefix}__group__g{group}",
                 msgpack.packb({"type": "task.event", "i": i, "data": body}))
    if i % 200 == 199:
        pipe.execute()
        time.sleep(0.002)  # a steady stream, not one burst
pipe.execute()
"""


@dataclass
class Shape:
    name: str
    groups: int


SHAPES = [Shape(f"{CONSUMERS} groups x 1 consumer", CONSUMERS),
          Shape(f"1 group x {CONSUMERS} consumers", 1)]
VARIANTS = {"stock": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "taskpulse": "consumers.layer.ResyncingPubSubChannelLayer"}


def consumer_class(variant: str) -> type:
    from channels.consumer import get_handler_name
    from channels.generic.websocket import AsyncWebsocketConsumer

    from consumers.base import InboxConsumer
    from consumers.server.install import install_tunings

    if variant == "taskpulse":
        install_tunings()  # the consumer loop and pub/sub reader, as the launcher runs them
    base: type = InboxConsumer if variant == "taskpulse" else AsyncWebsocketConsumer

    class Watcher(base):  # type: ignore[misc]
        channel_layer_alias = variant

        async def connect(self) -> None:
            await self.channel_layer.group_add(self.scope["group"], self.channel_name)
            await self.accept()

        async def dispatch(self, message: dict[str, Any]) -> None:
            await getattr(self, get_handler_name(message))(message)

        async def task_event(self, message: dict[str, Any]) -> None:
            await self.send(text_data=message["data"])

    return Watcher


async def one_run(variant: str, shape: Shape, url: str, events: int) -> dict[str, float]:
    from channels.layers import channel_layers

    prefix = f"tpbl{os.getpid()}{variant}"
    channel_layers.backends.pop(variant, None)
    from django.conf import settings

    settings.CHANNEL_LAYERS[variant] = {"BACKEND": VARIANTS[variant],
                                        "CONFIG": {"hosts": [url], "prefix": prefix}}
    watcher = consumer_class(variant)
    delivered = 0
    everyone_in = asyncio.Event()
    accepted = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal delivered, accepted
        if message["type"] == "websocket.send":
            delivered += 1
        elif message["type"] == "websocket.accept":
            accepted += 1
            if accepted == CONSUMERS:
                everyone_in.set()

    inputs = [asyncio.Queue[dict[str, Any]]() for _ in range(CONSUMERS)]
    apps = []
    for i, queue in enumerate(inputs):
        scope = {"type": "websocket", "path": "/", "group": f"g{i % shape.groups}",
                 "headers": [], "query_string": b""}
        queue.put_nowait({"type": "websocket.connect"})
        apps.append(asyncio.ensure_future(watcher()(scope, queue.get, send)))
    await asyncio.wait_for(everyone_in.wait(), 60)
    await asyncio.sleep(0.3)
    n_published = events if shape.groups > 1 else events // CONSUMERS * 10
    expected = n_published * (1 if shape.groups > 1 else CONSUMERS)
    before = resource.getrusage(resource.RUSAGE_SELF)
    loop = asyncio.get_running_loop()
    started = loop.time()
    publisher = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PUBLISHER, url, prefix, str(shape.groups), str(n_published))
    while delivered < expected and loop.time() - started < 120:
        await asyncio.sleep(0.02)
    after = resource.getrusage(resource.RUSAGE_SELF)
    await publisher.wait()
    for queue in inputs:
        queue.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait(apps, timeout=10)
    await channel_layers[variant].flush()
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"delivered": delivered, "lost": expected - delivered,
            "cpu_us_per_frame": 1e6 * cpu / max(delivered, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events", type=int, default=20000,
                        help="events published per run of the many-groups shape")
    args = parser.parse_args()
    setup = report.machine()
    results: dict[str, list[dict[str, float]]] = {}
    with stack.private_redis() as redis_server:
        stack.setup_django(stack.bench_env(redis_server.url))
        for r in range(args.rounds):
            for shape in SHAPES:
                for variant in (list(VARIANTS) if r % 2 == 0 else list(VARIANTS)[::-1]):
                    out = asyncio.run(one_run(variant, shape, redis_server.url, args.events))
                    print(variant, shape.name, out, flush=True)
                    results.setdefault(f"{variant}|{shape.name}", []).append(out)
    rows = []
    for shape in SHAPES:
        per = {v: report.median([o["cpu_us_per_frame"] for o in results[f"{v}|{shape.name}"]])
               for v in VARIANTS}
        for variant in VARIANTS:
            runs = results[f"{variant}|{shape.name}"]
            rows.append([variant, shape.name, per[variant],
                         min(o["cpu_us_per_frame"] for o in runs),
                         max(o["cpu_us_per_frame"] for o in runs),
                         int(sum(o["lost"] for o in runs))])
        rows.append(["stock / taskpulse", shape.name, f"{per['stock'] / per['taskpulse']:.2f}x",
                     "", "", ""])
    report.save_data("layer", {"results": results, "args": vars(args)})
    report.write_section("layer", f"""
### The channel layer and consumer loop alone (no web server)

Set-up: {setup}. {CONSUMERS} ASGI consumer instances in
one process, subscribed through the layer; a second process PUBLISHes msgpack
events on the groups' channels (as the record script does) in a steady stream;
the figure is the consumers' process CPU time per event handed to a consumer's
`send` (which only counts). **stock**: channels_redis' `RedisPubSubChannelLayer`
and Channels' `AsyncConsumer` loop (`await_many_dispatch`); **taskpulse**:
`consumers/layer.py` + `consumers/subscriber.py` + `consumers/base.py`, with
the launcher's consumer loop and pub/sub reader (`consumers/server/install.py`). Both skip
Channels' per-message database clean-up. {args.rounds} rounds, variants alternating;
median, best and worst run.

{report.table(["variant", "shape", "CPU µs per frame", "best", "worst", "lost"], rows)}

Command: `{report.command_line()}`
""")


if __name__ == "__main__":
    main()
