"""The client and <task-progress> over Server-Sent Events, in Chromium against the real
stack: the fallback when WebSocket handshakes are refused, and `transport="sse"`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from playwright.sync_api import Browser, Page, Request, Route

from tests.browser.conftest import ACTION_TIMEOUT_MS
from tests.client import Http

PAGE_PATH = "/sse-test/"  # served by the test itself, on the site's origin
EVENTS_PATH = "/api/events/"

# A browser whose WebSocket handshakes are all refused (a proxy that drops upgrades):
# each socket closes with 1006 before opening, as Chromium reports a refusal.
REFUSING_WEBSOCKET_JS = """
window.refusedSockets = 0;
window.WebSocket = class {
  constructor(url) {
    this.url = url; this.readyState = 0; window.refusedSockets += 1;
    setTimeout(() => { this.readyState = 3; this.onclose?.({ code: 1006, reason: "" }); }, 5);
  }
  send() { throw new Error("not open"); }
  close() { this.readyState = 3; }
};
"""


def page_html(task_id: str, token: str, transport: str | None) -> str:
    attribute = f' transport="{transport}"' if transport else ""
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>SSE</title>
<script type="module">
  import {{ configure }} from "/static/taskpulse/client.js";
  configure({{ minDelay: 20, maxDelay: 50 }});  // refusals are counted quickly
</script>
<script type="module" src="/static/taskpulse/task-progress.js"></script>
</head><body><task-progress task-id="{task_id}" token="{token}"{attribute}></task-progress>
</body></html>"""


@dataclass
class Opened:
    page: Page
    events: list[str] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def opened(browser: Browser, site: str) -> Iterator[Opened]:
    context = browser.new_context(base_url=site)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    page = context.new_page()
    seen = Opened(page)

    def request(req: Request) -> None:
        if EVENTS_PATH in req.url:
            seen.events.append(req.url)

    page.on("request", request)
    page.on("websocket", lambda socket: seen.sockets.append(socket.url))
    page.on("pageerror", lambda error: seen.errors.append(str(error)))
    try:
        yield seen
        assert seen.errors == [], f"the page threw: {seen.errors}"
    finally:
        context.close()


def show(opened: Opened, site: str, transport: str | None, steps: int = 5,
         delay: float = 0.2) -> str:
    status, started = Http(site).start(steps=steps, delay=delay)
    assert status == 202, started
    html = page_html(started["task_id"], started["token"], transport)

    def serve(route: Route) -> None:
        route.fulfill(status=200, content_type="text/html", body=html)

    opened.page.route(f"**{PAGE_PATH}", serve)
    opened.page.goto(PAGE_PATH)
    task_id: str = started["task_id"]
    return task_id


def wait_success(page: Page, task_id: str) -> None:
    page.locator(f'task-progress[task-id="{task_id}"][data-state="SUCCESS"]').wait_for(
        timeout=30_000)


def test_falls_back_to_sse_when_websockets_are_refused(opened: Opened, site: str) -> None:
    """Refused handshakes: the element carries on over SSE to SUCCESS, result shown."""
    opened.page.add_init_script(REFUSING_WEBSOCKET_JS)
    task_id = show(opened, site, transport=None)
    wait_success(opened.page, task_id)
    assert opened.page.evaluate("window.refusedSockets") >= 5
    assert opened.events and task_id in opened.events[0]
    text = opened.page.locator(f'task-progress[task-id="{task_id}"]').inner_text()
    assert "steps" in text  # the result, {"steps": 5}


def test_websocket_only_does_not_fall_back(opened: Opened, site: str) -> None:
    """transport="websocket": refused handshakes end in the refusal, never SSE."""
    opened.page.add_init_script(REFUSING_WEBSOCKET_JS)
    task_id = show(opened, site, transport="websocket")
    opened.page.locator(f'task-progress[task-id="{task_id}"][data-error="connection_refused"]'
                        ).wait_for()
    assert opened.events == []


def test_forced_sse(opened: Opened, site: str) -> None:
    """transport="sse": no WebSocket at all, SUCCESS over SSE."""
    task_id = show(opened, site, transport="sse")
    wait_success(opened.page, task_id)
    assert opened.sockets == []
    assert len(opened.events) == 1  # one stream, closed by `end`, never reopened


def test_cancel_over_sse(opened: Opened, site: str) -> None:
    """transport="sse": the cancel button posts to the HTTP API, and REVOKED comes on the
    stream."""
    task_id = show(opened, site, transport="sse", steps=100, delay=0.2)
    element = f'task-progress[task-id="{task_id}"]'
    opened.page.locator(f'{element}[data-state="PROGRESS"]').wait_for(timeout=30_000)
    opened.page.locator(f"{element} button.taskpulse-cancel").click()
    opened.page.locator(f'{element}[data-state="REVOKED"]').wait_for(timeout=30_000)
    assert opened.sockets == []
