"""HTTP API of PROTOCOL.md §6 and the health check (routed by progress/urls.py)."""

import json
import uuid
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from progress.control import startable
from progress.control.cancel import CancelOutcome, cancel
from progress.publisher import store
from progress.store.connections import sync_clients
from progress.wire.errors import ErrorCode
from progress.wire.ids import is_valid_task_id
from progress.wire.tokens import Permission, TokenError, issue_token, verify_token

BEARER = "Bearer "


def error_response(status: int, code: ErrorCode, detail: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code.value, "detail": detail}}, status=status)


def _parse_start(body: bytes) -> tuple[str, list[Any], dict[str, Any]]:
    try:
        data = json.loads(body or b"null")
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
    return f"{scheme}://{request.get_host()}/ws/progress/{task_id}/?token={token}"


@require_POST
def start_task(request: HttpRequest) -> JsonResponse:
    try:
        name, args, kwargs = _parse_start(request.body)
    except startable.BadArguments as exc:
        return error_response(400, ErrorCode.BAD_ARGUMENTS, str(exc))
    entry = startable.lookup(name)
    if entry is None:
        return error_response(404, ErrorCode.UNKNOWN_TASK, f"no startable task named {name!r}")
    try:
        startable.check_arguments(entry, args, kwargs)
    except startable.BadArguments as exc:
        return error_response(400, ErrorCode.BAD_ARGUMENTS, str(exc))
    task_id = str(uuid.uuid4())
    token = issue_token(task_id)
    entry.start(args, kwargs, task_id)
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
        return error_response(403, ErrorCode.FORBIDDEN, str(exc))
    return None


@require_GET
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
def cancel_task(request: HttpRequest, task_id: str) -> JsonResponse:
    refused = _authorise(request, task_id, Permission.CANCEL)
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
