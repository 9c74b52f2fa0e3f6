"""The Server-Sent Events endpoint (docs/PROTOCOL.md, "Extension: Server-Sent Events"):
`GET <prefix>events/?task=<id>&token=<token>[&task=...&token=...][&format=html]`.

Everything that can refuse a stream is checked before it starts, and answered with
§6's JSON error body: the browser's origin, the query, each token, the caps on open
streams, and Redis (the subscriptions and the first reads happen here too). Then
the stream itself is progress/web/sse_stream.py's.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.http import require_http_methods

from progress import conf
from progress.control.refusals import Refusal, log_refusal
from progress.tokens import Permission, TokenError, verify_token
from progress.web import resume_ids
from progress.web.backlog import backlog_of
from progress.web.origins import origin_allowed
from progress.web.sse_html import html_lines
from progress.web.sse_stream import REDIS_DOWN, Render, Stream, json_lines
from progress.web.views import client_of, error_response
from progress.wire.errors import ErrorCode
from progress.wire.ids import is_valid_task_id

FORMATS: dict[str, Render] = {"json": json_lines, "html": html_lines}
# Seconds the subscriptions and first reads may take before the answer is a 503.
OPEN_TIMEOUT = 10.0
RETRY_AFTER = 1  # s, of a 503 or a 429
PREFLIGHT_MAX_AGE = 3600  # s a browser may keep the answer to a CORS preflight


class _OpenStreams:
    """Streams open in this process, in all and per client (the WebSockets' caps,
    TASKPULSE_MAX_SOCKETS and TASKPULSE_MAX_SOCKETS_PER_CLIENT, counted apart)."""

    def __init__(self) -> None:
        self.total = 0
        self.per_client: Counter[str] = Counter()

    def refusal(self, client: str) -> HttpResponse | None:
        if self.total >= conf.max_sockets():
            return error_response(503, ErrorCode.UNAVAILABLE, "too many open streams; try "
                                  "again later", retry_after=RETRY_AFTER)
        per_client = conf.max_sockets_per_client()
        if per_client and self.per_client[client] >= per_client:
            return error_response(429, ErrorCode.RATE_LIMITED,
                                  f"at most {per_client} open streams per client",
                                  retry_after=RETRY_AFTER)
        return None

    def add(self, client: str) -> None:
        self.total += 1
        self.per_client[client] += 1

    def remove(self, client: str) -> None:
        self.total -= 1
        self.per_client[client] -= 1
        if self.per_client[client] <= 0:
            del self.per_client[client]


_open = _OpenStreams()


def _tasks(request: HttpRequest) -> list[str] | HttpResponse:
    """The query's tasks, every token checked; or the error response."""
    tasks, tokens = request.GET.getlist("task"), request.GET.getlist("token")
    if not tasks or len(tasks) != len(tokens):
        return error_response(400, ErrorCode.BAD_REQUEST,
                              "name each task with its token: ?task=<id>&token=<token>, "
                              "repeated in pairs")
    if request.GET.get("format", "json") not in FORMATS:
        return error_response(400, ErrorCode.BAD_REQUEST,
                              f"format is one of {', '.join(FORMATS)}")
    bad = next((task for task in tasks if not is_valid_task_id(task)), None)
    if bad is not None:
        return error_response(400, ErrorCode.BAD_TASK_ID, "task ids match [A-Za-z0-9_.-]{1,80}")
    if len(set(tasks)) != len(tasks):
        return error_response(400, ErrorCode.BAD_REQUEST, "a task is named twice")
    if len(tasks) > conf.max_subscriptions():
        return error_response(400, ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                              f"at most {conf.max_subscriptions()} tasks on one stream")
    for task, token in zip(tasks, tokens, strict=True):
        try:
            verify_token(token, task, Permission.WATCH)
        except TokenError as exc:
            log_refusal(Refusal.TOKEN, client_of(request), f"{exc} (task {task}, watch)")
            return error_response(403, ErrorCode.FORBIDDEN, f"task {task}: {exc}")
    return tasks


def _allow_origin(response: HttpResponseBase, origin: str | None) -> HttpResponseBase:
    """CORS for an allowed origin: a status server on its own domain (TASKPULSE_ALLOWED_ORIGINS)."""
    if origin:
        response["Access-Control-Allow-Origin"] = origin
        response["Vary"] = "Origin"
    return response


@require_http_methods(["GET", "OPTIONS"])
async def events(request: HttpRequest) -> HttpResponseBase:
    origin = request.headers.get("Origin")
    if not origin_allowed(origin):
        log_refusal(Refusal.ORIGIN, client_of(request), f"SSE from origin {origin!r}")
        return error_response(403, ErrorCode.FORBIDDEN, "this origin may not open a stream")
    if request.method == "OPTIONS":
        # A cross-origin reconnect carries Last-Event-ID, which is no CORS-safelisted
        # header: the browser asks first (a status server on its own domain).
        preflight = HttpResponse(status=204)
        preflight["Access-Control-Allow-Methods"] = "GET"
        preflight["Access-Control-Allow-Headers"] = "Last-Event-ID, Cache-Control"
        preflight["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE)
        return _allow_origin(preflight, origin)
    tasks = _tasks(request)
    if isinstance(tasks, HttpResponse):
        return _allow_origin(tasks, origin)
    resume = resume_ids.decode(request.headers.get("Last-Event-ID"), len(tasks))
    if resume is not None and all(position.final for position in resume):
        return _allow_origin(HttpResponse(status=204), origin)  # EventSource stops here
    client = client_of(request)
    refused = _open.refusal(client)
    if refused is not None:
        return _allow_origin(refused, origin)
    stream = Stream(tasks, resume, FORMATS[request.GET.get("format", "json")],
                    backlog_of(getattr(request, "scope", {})), lambda: _open.remove(client))
    _open.add(client)  # until the stream's shutdown, which a failed open runs too
    try:
        async with asyncio.timeout(OPEN_TIMEOUT):
            await stream.open()
    except REDIS_DOWN:
        return _allow_origin(error_response(503, ErrorCode.UNAVAILABLE,
                                            "the progress store is unavailable; try again "
                                            "shortly", retry_after=RETRY_AFTER), origin)
    response = StreamingHttpResponse(stream, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each message on at once
    return _allow_origin(response, origin)
