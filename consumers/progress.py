"""The progress consumer: parse a frame, authorise, delegate; push task events.

Task state lives in Redis; the consumer only remembers, per subscription,
the epoch and last seq it sent (progress/wire/delivery.py decides the rest).
"""

import asyncio
import json
import logging
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.exceptions import StopConsumer

from consumers import wire
from consumers.base import InboxConsumer
from consumers.channel_layer import ensure_alias
from consumers.clients import client_of_scope
from consumers.frames import Cancel, FrameError, Ping, Subscribe, Unsubscribe, parse_frame
from consumers.limits import RateVerdict, TokenBucket
from consumers.outbox import (
    BACKLOG_EXTENSION,
    SEND_NOW_EXTENSION,
    SendQueue,
    no_backlog,
    no_send_now,
)
from progress import conf
from progress.control import ratelimit
from progress.control.cancel import CancelOutcome, cancel
from progress.control.refusals import Refusal, log_refusal
from progress.store import keys
from progress.store.process_store import async_store
from progress.store.records import ReadResult
from progress.tokens import Permission, TokenError, verify_token
from progress.wire import close_codes
from progress.wire.delivery import Subscription, Verdict, judge
from progress.wire.errors import ErrorCode
from progress.wire.states import State
from progress.wire.types import TaskEventMessage

logger = logging.getLogger(__name__)

# Messages whose failure the client hears of as `unavailable`: a frame it sent, and
# the connect of the one-task endpoint, which subscribes on the client's behalf.
ANSWERED = frozenset({"websocket.receive", "websocket.connect"})

# Pauses between attempts to catch a subscription up after a layer reconnect.
RESYNC_RETRY_PAUSES = (0.2, 0.5, 1.0)



class ProgressConsumer(InboxConsumer):
    # While the socket holds no subscription: the timer that closes it, then the
    # close itself (_watch_idle). A class default: nothing stored until connect.
    _idle: asyncio.TimerHandle | asyncio.Task[None] | None = None

    @property
    def channel_layer_alias(self) -> str:
        # TaskPulse's own alias, never the host's "default" layer.
        return ensure_alias()

    async def connect(self) -> None:
        self.subscriptions: dict[str, Subscription] = {}
        rate, burst = conf.rate_limit()
        self.bucket = TokenBucket(rate, burst, conf.flood_strikes())
        extensions = self.scope.get("extensions", {})
        self.outbox = SendQueue(self.send, extensions.get(BACKLOG_EXTENSION, no_backlog),
                                self._reader_too_slow, conf.send_queue_max_frames(),
                                conf.slow_reader_timeout(),
                                extensions.get(SEND_NOW_EXTENSION, no_send_now),
                                max_bytes=conf.send_queue_max_bytes(),
                                process_max_bytes=conf.send_queue_process_max_bytes())
        self.client = client_of_scope(self.scope)  # before the headers go, below
        await self.accept()
        # The headers served the handshake (origin check); an idle connection
        # need not keep them (~0.9 KB each, docs/BENCHMARKS.md "Idle connections").
        # Emptied in place: the routers' copies of the scope share the list.
        headers = self.scope.get("headers")
        if isinstance(headers, list):
            headers.clear()
        self._watch_idle()
        task_id = self._url_task_id()
        if task_id is not None:
            query = parse_qs(self.scope.get("query_string", b"").decode("latin1"))
            frame = {"type": "subscribe", "task_id": task_id, "token": query.get("token", [""])[0]}
            await self.handle_text(json.dumps(frame))

    async def disconnect(self, code: int) -> None:
        try:
            if hasattr(self, "outbox"):
                await self.outbox.close()
            for task_id in list(getattr(self, "subscriptions", {})):
                await self._end(task_id)
        finally:
            self._stop_idle_watch()

    def _watch_idle(self) -> None:
        """Close the socket once it has held no subscription for
        TASKPULSE_IDLE_SOCKET_TIMEOUT: an open socket needs no token, and sockets
        holding nothing would otherwise fill the process's caps. One timer handle
        per idle socket, nothing per subscribed one."""
        timeout = conf.idle_socket_timeout()
        if timeout and self._idle is None:
            self._idle = asyncio.get_running_loop().call_later(timeout, self._idle_expired)

    def _stop_idle_watch(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _idle_expired(self) -> None:
        # A timer callback cannot await: the close runs as a task, kept where the
        # timer was, so that a subscription meanwhile or the disconnect cancels it.
        self._idle = asyncio.ensure_future(self.close(close_codes.IDLE))

    async def _reader_too_slow(self) -> None:
        # The client left frames unread past the bounds: drop it rather than
        # hold its backlog; it resumes with since/epoch when it reads again.
        logger.info("TaskPulse: closing a connection that stopped reading")
        await self.close(close_codes.SLOW_READER)

    async def reply(self, frame: str, task_id: str | None = None) -> None:
        """Queue a frame for the client (in order; see consumers/outbox.py)."""
        await self.outbox.put(frame, task_id)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        verdict = self.bucket.take()
        if verdict is RateVerdict.FLOOD:
            await self.close(close_codes.FLOODING)
            return
        if verdict is RateVerdict.LIMITED:
            await self.reply(wire.error(ErrorCode.RATE_LIMITED, "slow down: too many frames"))
            return
        if text_data is None:
            await self.reply(wire.error(ErrorCode.BAD_FRAME, "binary frames are not accepted"))
            return
        if len(text_data.encode()) > conf.max_frame_bytes():
            await self.close(close_codes.MESSAGE_TOO_BIG)
            return
        await self.handle_text(text_data)

    async def handle_text(self, text: str) -> None:
        try:
            frame = parse_frame(text)
            if isinstance(frame, Subscribe):
                await self.subscribe(frame)
            elif isinstance(frame, Unsubscribe):
                await self._end(frame.task_id)
                await self.reply(wire.unsubscribed(frame.task_id), frame.task_id)
            elif isinstance(frame, Cancel):
                await self.cancel(frame)
            elif isinstance(frame, Ping):
                await self.reply(wire.pong(frame.id))
        except FrameError as exc:
            await self.reply(wire.error(exc.code, exc.detail, exc.task_id), exc.task_id)

    def _authorise(self, task_id: str, token: str, needs: Permission) -> None:
        try:
            verify_token(token, task_id, needs)
        except TokenError as exc:
            log_refusal(Refusal.TOKEN, self.client, f"{exc} (task {task_id}, {needs.value})")
            raise FrameError(ErrorCode.FORBIDDEN, str(exc), task_id) from None

    async def subscribe(self, frame: Subscribe) -> None:
        self._authorise(frame.task_id, frame.token, Permission.WATCH)
        if (frame.task_id not in self.subscriptions
                and len(self.subscriptions) >= conf.max_subscriptions()):
            raise FrameError(ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                             f"at most {conf.max_subscriptions()} active subscriptions",
                             frame.task_id)
        sub = self.subscriptions.get(frame.task_id)
        if sub is None:
            # Join the group before reading the record, so no event falls
            # between the snapshot and the live stream; duplicates are dropped.
            group = keys.group_name(frame.task_id)
            try:
                await self.channel_layer.group_add(group, self.channel_name)
            except Exception:
                # Redis unreachable: forget the half-made membership; the client retries.
                await self.channel_layer.group_discard(group, self.channel_name)
                raise
        sub = self.subscriptions[frame.task_id] = Subscription(frame.task_id, None, 0)
        self._stop_idle_watch()
        if frame.since is not None and frame.epoch is not None:
            await self._resync(sub, frame.since, frame.epoch, resuming=True)
        else:
            await self._resync(sub, None, None, resuming=False)

    async def _resync(self, sub: Subscription, since: int | None, epoch: str | None,
                      resuming: bool) -> None:
        """Bring a subscription up to date: resume from history, or send a snapshot."""
        found: ReadResult = await async_store().read(sub.task_id, since)
        snapshot = found.snapshot
        if snapshot is None:
            if since is not None and not resuming and sub.epoch is None:
                return  # still no record: nothing was missed
            sub.epoch, sub.last_seq = None, 0
            await self.reply(wire.unknown_snapshot(sub.task_id, reset=since is not None),
                             sub.task_id)
            return
        if since is not None and snapshot.epoch == epoch and found.missed is not None:
            if resuming:
                await self.reply(wire.resumed(sub.task_id, snapshot.epoch, since), sub.task_id)
            sub.epoch, sub.last_seq = snapshot.epoch, since
            for event_json in found.missed:
                await self._forward(sub, event_json)
            if not found.missed and json.loads(snapshot.json)["final"]:
                await self._end(sub.task_id)  # the client already has the final event
            return
        current = json.loads(snapshot.json)
        sub.epoch, sub.last_seq, sub.last_state = snapshot.epoch, snapshot.seq, current["state"]
        await self.reply(wire.object_frame("snapshot", snapshot.json, reset=since is not None),
                         sub.task_id)
        if current["final"]:
            await self._end(sub.task_id)

    async def _catch_up(self, sub: Subscription, live_epoch: str | None = None) -> None:
        """After missed events: fill the gap from history, or send a reset snapshot."""
        if sub.epoch is not None and live_epoch in (None, sub.epoch):
            await self._resync(sub, sub.last_seq, sub.epoch, resuming=False)
        else:
            await self._resync(sub, 0, None, resuming=False)
        sub.stale = False

    async def _forward(self, sub: Subscription, event_json: str) -> None:
        event = json.loads(event_json)
        if event["seq"] <= sub.last_seq:
            return
        await self._deliver(sub, event["seq"], event["state"], event["final"], event_json)

    async def _deliver(self, sub: Subscription, seq: int, state: str, final: bool,
                       event_json: str) -> None:
        sub.last_seq = seq
        progress_only = state == State.PROGRESS and sub.last_state == State.PROGRESS
        sub.last_state = state
        await self.outbox.put(wire.object_frame("event", event_json), sub.task_id, progress_only)
        if final:
            await self._end(sub.task_id)

    async def task_event(self, message: TaskEventMessage) -> None:
        """A live event from the channel layer (published by progress/store/lua.py)."""
        sub = self.subscriptions.get(message["task_id"])
        if sub is None:
            return
        verdict = judge(sub, message["epoch"], message["seq"])
        if verdict is Verdict.FORWARD:
            sub.epoch = message["epoch"]
            await self._deliver(sub, message["seq"], message["state"], message["final"],
                                message["data"])
        elif verdict is Verdict.RESYNC:
            # A gap (a dropped message, a Redis reconnect) or a new epoch.
            await self._catch_up_or_report(sub, message["epoch"])

    async def layer_reconnected(self, message: dict[str, Any]) -> None:
        """The channel layer lost Redis for a while: whatever was published then is gone.
        Each subscription catches up on its own: one that cannot does not hold back the rest."""
        for sub in list(self.subscriptions.values()):
            if sub.task_id in self.subscriptions:
                await self._catch_up_or_report(sub)

    async def _catch_up_or_report(self, sub: Subscription,
                                  live_epoch: str | None = None) -> None:
        for attempt, pause in enumerate((*RESYNC_RETRY_PAUSES, None)):
            try:
                await self._catch_up(sub, live_epoch)
            except Exception as exc:
                if pause is not None:
                    await asyncio.sleep(pause)
                    continue
                # Still failing: tell the client, and resync at the next live event.
                logger.warning("TaskPulse: resync of %s failed after %d attempts: %s",
                               sub.task_id, attempt + 1, exc)
                sub.stale = True
                await self.reply(wire.error(ErrorCode.UNAVAILABLE,
                                            "missed events could not be read yet; they are "
                                            "sent when the store answers (or subscribe again)",
                                            sub.task_id), sub.task_id)
            return

    async def cancel(self, frame: Cancel) -> None:
        self._authorise(frame.task_id, frame.token, Permission.CANCEL)
        wait = await sync_to_async(ratelimit.hit, thread_sensitive=False)(
            ratelimit.Action.CANCEL, self.client)
        if wait is not None:
            raise FrameError(ErrorCode.RATE_LIMITED,
                             f"too many cancel requests; retry in {wait}s", frame.task_id)
        outcome, state = await sync_to_async(cancel, thread_sensitive=False)(frame.task_id)
        if outcome is CancelOutcome.ACCEPTED:
            await self.reply(wire.cancelling(frame.task_id), frame.task_id)
        else:
            detail = "no record for this task" if state is None else f"task is already {state}"
            raise FrameError(ErrorCode.NOT_CANCELLABLE, detail, frame.task_id)

    async def _end(self, task_id: str) -> None:
        if self.subscriptions.pop(task_id, None) is not None:
            if not self.subscriptions:
                self._watch_idle()
            await self.channel_layer.group_discard(keys.group_name(task_id), self.channel_name)

    async def dispatch(self, message: dict[str, Any]) -> None:
        try:
            await super().dispatch(message)
        except StopConsumer:
            raise
        except Exception:
            # A server-side fault (e.g. Redis unreachable) must not close the
            # socket with 1011: log it and tell the client, who may retry.
            logger.exception("TaskPulse consumer failed on %s", message.get("type"))
            if message.get("type") in ANSWERED and hasattr(self, "outbox"):
                await self.reply(wire.error(ErrorCode.UNAVAILABLE, "server busy, try again",
                                            self._url_task_id()), self._url_task_id())

    def _url_task_id(self) -> str | None:
        """The task of the one-task endpoint (/ws/progress/<id>/), None on the shared one."""
        task_id: str | None = self.scope["url_route"]["kwargs"].get("task_id")
        return task_id
