"""HTTP API of PROTOCOL.md §6 and the health check (routed by progress/urls.py).

Every answer is JSON, errors included: bad input is a 400, a client over its
rate limit a 429 with Retry-After, and an unreachable Redis (or a task system's
unreachable broker, for a start) a 503, never Django's HTML error page.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable
from typing import Any

import redis
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from progress.control import ratelimit, startable
from progress.control.cancel import CancelOutcome, cancel
from progress.control.clients import client_address
from progress.control.refusals import Refusal, log_refusal
from progress.publisher import store
from progress.store.connections import sync_clients
from progress.taskqueue.unavailable import QueueUnavailable
from progress.tokens import WATCH_AND_CANCEL, Permission, TokenError, issue_token, verify_token
from progress.wire.encoding import loads
from progress.wire.errors import ErrorCode
from progress.wire.ids import is_valid_task_id

logger = logging.getLogger(__name__)

BEARER = "Bearer "
WS_PATH = "/ws/progress/"  # consumers.routing serves it
# Retry-After (s) of a start refused because the task system's broker is down.
QUEUE_RETRY_AFTER = 5

View = Callable[..., HttpResponse]


def error_response(status: int, code: ErrorCode, detail: str,
                   retry_after: int | None = None) -> JsonResponse:
    response = JsonResponse({"error": {"code": code.value, "detail": detail}}, status=status)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


def redis_unavailable_is_503(view: View) -> View:
    """Answer the protocol's JSON 503 when Redis cannot be reached (not an HTML 500)."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except redis.RedisError as exc:
            logger.warning("TaskPulse API: Redis unavailable: %s", exc)
            return error_response(503, ErrorCode.UNAVAILABLE,
                                  "the progress store is unavailable; try again shortly",
                                  retry_after=1)

    return wrapped


def client_of(request: HttpRequest) -> str:
    return client_address(request.META.get("REMOTE_ADDR"),
                          request.META.get("HTTP_X_FORWARDED_FOR"))


def _over_limit(request: HttpRequest, action: ratelimit.Action) -> JsonResponse | None:
    wait = ratelimit.hit(action, client_of(request))
    if wait is None:
        return None
    return error_response(429, ErrorCode.RATE_LIMITED,
                          f"too many {action.value} requests; retry in {wait}s", retry_after=wait)


def _parse_start(body: bytes) -> tuple[str, list[Any], dict[str, Any]]:
    try:
        data = loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise startable.BadArguments("the body is not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("task"), str):
        raise startable.BadArguments('send a JSON object {"task": name, "args": [], "kwargs": {}}')
    args, kwargs = data.get("args", []), data.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise startable.BadArguments("args must be a JSON array and kwargs a JSON object")
    return data["task"], args, kwargs


def _ws_url(request: HttpRequest, task_id: str, token: str) -> str:
    scheme = "wss" if request.is_secure() else "ws"
    return f"{scheme}://{request.get_host()}{WS_PATH}{task_id}/?token={token}"


@require_POST
@redis_unavailable_is_503
def start_task(request: HttpRequest) -> HttpResponse:
    try:
        name, args, kwargs = _parse_start(request.body)
    except startable.BadArguments as exc:
        return error_response(400, ErrorCode.BAD_ARGUMENTS, str(exc))
    entry = startable.lookup(name)
    if entry is None:
        return error_response(404, ErrorCode.UNKNOWN_TASK, f"no startable task named {name!r}")
    if not entry.allow(request):
        return error_response(403, ErrorCode.FORBIDDEN, f"you may not start {name}; log in")
    try:
        startable.check_arguments(entry, args, kwargs)
    except startable.BadArguments as exc:
        return error_response(400, ErrorCode.BAD_ARGUMENTS, str(exc))
    refused = _over_limit(request, ratelimit.Action.START)
    if refused is not None:
        return refused
    task_id = str(uuid.uuid4())
    # The caller started the task, so it may stop it: pages such as the demo
    # offer a cancel button with this token.
    token = issue_token(task_id, WATCH_AND_CANCEL)
    try:
        entry.start(args, kwargs, task_id)
    except QueueUnavailable:
        # Logged, and the task's record ended FAILURE, by entry.start.
        return error_response(503, ErrorCode.UNAVAILABLE,
                              f"{name} could not be sent: its task queue is unavailable; "
                              "try again shortly", retry_after=QUEUE_RETRY_AFTER)
    return JsonResponse(
        {
            "task_id": task_id,
            "token": token,
            "status_url": reverse("taskpulse:task-status", args=[task_id]),
            "ws_url": _ws_url(request, task_id, token),
        },
        status=202,
    )


def _authorise(request: HttpRequest, task_id: str, needs: Permission) -> JsonResponse | None:
    """An error response, or None when the request may act on the task."""
    if not is_valid_task_id(task_id):
        return error_response(400, ErrorCode.BAD_TASK_ID, "task ids match [A-Za-z0-9_.-]{1,80}")
    header = request.headers.get("Authorization", "")
    token = header[len(BEARER):] if header.startswith(BEARER) else request.GET.get("token", "")
    try:
        verify_token(token, task_id, needs)
    except TokenError as exc:
        log_refusal(Refusal.TOKEN, client_of(request), f"{exc} (task {task_id}, {needs.value})")
        return error_response(403, ErrorCode.FORBIDDEN, str(exc))
    return None


@require_GET
@redis_unavailable_is_503
def task_status(request: HttpRequest, task_id: str) -> HttpResponse:
    refused = _authorise(request, task_id, Permission.WATCH)
    if refused is not None:
        return refused
    snapshot = store().read(task_id).snapshot
    if snapshot is None:
        return error_response(404, ErrorCode.NOT_FOUND, "no record for this task")
    return HttpResponse(snapshot.json, content_type="application/json")


# The token authorises the call, not a cookie, so CSRF does not apply.
@csrf_exempt
@require_POST
@redis_unavailable_is_503
def cancel_task(request: HttpRequest, task_id: str) -> HttpResponse:
    refused = _authorise(request, task_id, Permission.CANCEL) or _over_limit(
        request, ratelimit.Action.CANCEL)
    if refused is not None:
        return refused
    outcome, state = cancel(task_id)
    if outcome is CancelOutcome.UNKNOWN:
        return error_response(404, ErrorCode.NOT_FOUND, "no record for this task")
    if outcome is CancelOutcome.NOT_CANCELLABLE:
        return error_response(409, ErrorCode.NOT_CANCELLABLE, f"task is already {state}")
    return JsonResponse({"task_id": task_id, "state": state}, status=202)


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when every Redis shard answers; 503 naming the first that does not."""
    for shard, client in enumerate(sync_clients()):
        try:
            client.ping()
        except Exception as exc:
            return JsonResponse({"status": "unavailable", "redis": type(exc).__name__,
                                 "shard": shard}, status=503)
    return JsonResponse({"status": "ok", "redis": "ok"})
