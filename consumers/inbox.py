"""A consumer's inbox: one queue per connection, one reader (the consumer's loop).

The part of asyncio.Queue a consumer needs (put_nowait, and one getter's
get), without its cost: asyncio.Queue holds four deques (~3 KB even when
empty); this holds a deque only while messages wait and a future only while
its reader waits (docs/BENCHMARKS.md, "Idle connections").
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any


class Inbox:
    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: collections.deque[Any] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        if self._items is None:
            self._items = collections.deque()
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self._items.popleft()
        if not self._items:
            self._items = None
        return item
