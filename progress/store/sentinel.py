"""Which server is a Sentinel master now: every sentinel asked, the newest configuration wins.

redis-py's own discovery takes the first sentinel's `SENTINEL MASTERS`, and the
sentinel leading a planned fail-over keeps naming the old master there until
the fail-over ends (~5 s after the promotion), while the old master takes and
then loses every write. `SENTINEL GET-MASTER-ADDR-BY-NAME` names the promoted
replica as soon as the leader has seen it promoted, and the configuration epoch
(`SENTINEL MASTER`) says whose answer is newest, so every sentinel is asked for
both, in parallel, and the answer of the newest epoch that most sentinels give
is the master. Every Redis user of a Sentinel shard resolves the master here
(progress/store/connections.py, progress/store/sweeper.py, consumers/subscriber.py),
and its pools (the last section) ask again while in use, not only to connect.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool

logger = logging.getLogger(__name__)

Address = tuple[str, int]
# Seconds between asking the sentinels which server is master: a master replaced while
# alive takes (and later loses) the writes of whoever has not asked since.
SENTINEL_CHECK_INTERVAL = 0.5
# A sentinel's flags for a master that say its answer may be about to change.
UNSETTLED_FLAGS = frozenset({"failover_in_progress", "o_down", "s_down"})


@dataclass(frozen=True)
class Answer:
    """One sentinel's view of a master."""

    address: Address
    epoch: int  # the configuration epoch: a fail-over's promotion raises it
    flags: frozenset[str]

    @property
    def settled(self) -> bool:
        return not self.flags & UNSETTLED_FLAGS


@dataclass(frozen=True)
class Survey:
    """Every sentinel's answer (None: it did not answer) and the master they name."""

    master: Address
    epoch: int
    answers: tuple[Answer | None, ...]

    @property
    def settled(self) -> bool:
        """Every answering sentinel names this master and none is in a fail-over: the
        time to trust what this server holds (the sweeper marks tasks LOST only then)."""
        answered = [answer for answer in self.answers if answer is not None]
        return all(answer.settled and answer.address == self.master for answer in answered)


def choose(answers: Sequence[Answer | None], name: str) -> Survey:
    """The master: the newest configuration epoch's address; among equals, the one most
    sentinels name without a fail-over flag, then the one most name at all."""
    answered = [answer for answer in answers if answer is not None]
    if not answered:
        raise MasterNotFoundError(f"no sentinel answered for master {name!r}")
    newest = max(answer.epoch for answer in answered)
    settled = collections.Counter(a.address for a in answered if a.epoch == newest and a.settled)
    named = collections.Counter(a.address for a in answered if a.epoch == newest)
    master = max(named, key=lambda address: (settled[address], named[address]))
    return Survey(master, newest, tuple(answers))


def _answer(address: Any, state: Any) -> Answer:
    host, port = address
    host = host.decode() if isinstance(host, bytes) else str(host)
    flags = state.get("flags", "")  # "master,failover_in_progress" (RESP3: a set)
    flag_set = frozenset(flags.split(",") if isinstance(flags, str) else flags)
    return Answer((host, int(port)), int(state.get("config-epoch", 0)), flag_set)


def _commands(pipe: Any, name: str) -> None:
    pipe.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", name)
    pipe.execute_command("SENTINEL MASTER", name)


def ask(sentinel: redis.Redis, name: str) -> Answer | None:
    """One sentinel's answer in one round trip (None: unreachable, or it knows no such master)."""
    pipe = sentinel.pipeline(transaction=False)
    _commands(pipe, name)
    try:
        address, state = pipe.execute()
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
        return None
    return None if not address else _answer(address, state)


def survey(sentinels: Sequence[redis.Redis], name: str) -> Survey:
    """Every sentinel asked at once (each within its own socket timeout)."""
    if len(sentinels) == 1:
        return choose([ask(sentinels[0], name)], name)
    with ThreadPoolExecutor(len(sentinels), thread_name_prefix="taskpulse-sentinel") as pool:
        return choose(list(pool.map(lambda sentinel: ask(sentinel, name), sentinels)), name)


async def ask_async(sentinel: aioredis.Redis, name: str) -> Answer | None:
    pipe = sentinel.pipeline(transaction=False)
    _commands(pipe, name)
    try:
        address, state = await pipe.execute()
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, OSError):
        return None
    return None if not address else _answer(address, state)


async def survey_async(sentinels: Sequence[aioredis.Redis], name: str) -> Survey:
    answers = await asyncio.gather(*(ask_async(sentinel, name) for sentinel in sentinels))
    return choose(answers, name)


# (sentinel addresses, master name) -> the newest (epoch, master) this process was told of.
_named: dict[tuple[frozenset[Address], str], tuple[int, Address]] = {}


def _sentinel_addresses(sentinels: Sequence[Any]) -> frozenset[Address]:
    found = set()
    for sentinel in sentinels:
        kwargs = sentinel.connection_pool.connection_kwargs
        found.add((str(kwargs.get("host")), int(kwargs.get("port", 0))))
    return frozenset(found)


def remember(addresses: frozenset[Address], name: str, found: Survey) -> Address:
    """The master to use after `found`: the newest this process was told of, so that a
    survey the leading sentinel missed (a timeout) does not move a client back; but
    what every sentinel answers alike wins (sentinels set up afresh count from 0)."""
    key = (addresses, name)
    known = _named.get(key)
    unanimous = found.settled and None not in found.answers
    if known is None or found.epoch >= known[0] or unanimous:
        _named[key] = known = (found.epoch, found.master)
    return known[1]


def last_named(manager: Any, name: str) -> Address | None:
    """The master this process last found through these sentinels (any client of them):
    `manager` is a MajoritySentinel or an AsyncMajoritySentinel."""
    known = _named.get((manager.addresses, name))
    return None if known is None else known[1]


class MajoritySentinel(Sentinel):
    """redis-py's Sentinel, with the master found by `survey` (every sentinel asked)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self.addresses = _sentinel_addresses(self.sentinels)

    def discover_master(self, service_name: str) -> Address:
        found = survey(self.sentinels, service_name)
        return remember(self.addresses, service_name, found)

    def survey(self, service_name: str) -> Survey:
        """Every sentinel's answer now (remembered as discover_master's are)."""
        found = survey(self.sentinels, service_name)
        remember(self.addresses, service_name, found)
        return found


class AsyncMajoritySentinel(AsyncSentinel):
    """redis-py's asyncio Sentinel, with the master found by `survey_async`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self.addresses = _sentinel_addresses(self.sentinels)

    async def discover_master(self, service_name: str) -> Address:
        found = await survey_async(self.sentinels, service_name)
        return remember(self.addresses, service_name, found)


# -- pools that follow the master ------------------------------------------------

class _Due:
    """Whether a Sentinel pool should ask the sentinels again: at most every
    SENTINEL_CHECK_INTERVAL, and at once when another client in this process found a
    new master (the web subscriber, the publisher) so that they all agree on one."""

    def __init__(self) -> None:
        self._next = 0.0

    def __call__(self, pool: Any) -> bool:
        named = last_named(pool.sentinel_manager, pool.service_name)
        if named is not None and pool.master_address not in (None, named):
            return True
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + SENTINEL_CHECK_INTERVAL
        return True


class FollowingSentinelPool(SentinelConnectionPool):
    """A Sentinel master's pool that asks the sentinels again when a connection is taken
    SENTINEL_CHECK_INTERVAL after the last time: redis-py's asks only to open one, and
    its idle connections would keep writing to a master replaced while alive."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._due = _Due()

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self._due(self):
            try:
                # On a change of master it drops the connections to the old one.
                self.get_master_address()  # type: ignore[no-untyped-call]
            except redis.ConnectionError as exc:  # no sentinel answers: keep the master we have
                logger.warning("TaskPulse: cannot ask the sentinels for the master: %s", exc)
        return super().get_connection(*args, **kwargs)


class AsyncFollowingSentinelPool(AsyncSentinelPool, aioredis.BlockingConnectionPool):
    """A Sentinel master's pool that waits for a free connection, as the URL pool does,
    and follows a new master as FollowingSentinelPool does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._due = _Due()

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self._due(self):
            try:
                await self.get_master_address()  # type: ignore[no-untyped-call]
            except redis.ConnectionError as exc:
                logger.warning("TaskPulse: cannot ask the sentinels for the master: %s", exc)
        return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
