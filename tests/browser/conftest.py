"""Browser fixtures: Debian's Chromium driven by Playwright against the real stack
(daphne + Celery worker from tests/conftest.py). Skipped when Chromium is absent.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import Stack

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route, WebSocket

CHROMIUM = Path("/usr/bin/chromium")
# Debian's Chromium, headless and quiet: no GPU, no sandbox (we run as root in
# containers), and no calls home that would wait on a network we do not have.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
]
LAUNCH_TIMEOUT_MS = 30_000
ACTION_TIMEOUT_MS = 15_000
STATIC_PROBE = "/static/taskpulse/task-progress.js"


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium, closed on exit; skips the test when there is none.
    Playwright's sync API keeps its own event loop running while it is open:
    open it in sync tests only, and close it before async ones run."""
    if not CHROMIUM.exists():
        pytest.skip(f"browser tests need Debian's Chromium at {CHROMIUM}: apt-get install chromium")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="browser tests need Playwright: pip install -e '.[test]'"
    )
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=LAUNCH_TIMEOUT_MS
        )
        try:
            yield launched
        finally:
            launched.close()


# Module scope, not session: Playwright's event loop would break the suite's async tests.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium per test module."""
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="session")
def site(stack: Stack) -> str:
    """The stack's base URL, once it is known to serve the client's static files."""
    try:
        with urllib.request.urlopen(stack.http + STATIC_PROBE, timeout=5) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    if status != 200:
        pytest.fail(f"daphne answered {status} for {STATIC_PROBE}: the ASGI app must serve "
                    "/static/ (e.g. ASGIStaticFilesHandler in project/asgi.py)")
    return stack.http


@dataclass
class DemoPage:
    """The demo page in a fresh browser context, with the WebSockets it opened."""

    page: Page
    sockets: list[WebSocket] = field(default_factory=list)
    sent: list[list[dict[str, Any]]] = field(default_factory=list)  # frames, per socket
    errors: list[str] = field(default_factory=list)

    def opened(self, socket: WebSocket) -> None:
        frames: list[dict[str, Any]] = []
        self.sockets.append(socket)
        self.sent.append(frames)
        socket.on("framesent", lambda payload: frames.append(json.loads(payload)))

    def start(self, steps: int, delay: float, fail_at: int | None = None) -> str:
        """Submit the start form; the new task's id, from the element it added on top."""
        before = self.page.locator("#tasks > task-progress").count()
        self.page.fill("#start-form [name=steps]", str(steps))
        self.page.fill("#start-form [name=delay]", str(delay))
        self.page.fill("#start-form [name=fail_at]", "" if fail_at is None else str(fail_at))
        self.page.click("#start-form [type=submit]")
        self.page.locator("#tasks > task-progress").nth(before).wait_for()
        task_id = self.page.locator("#tasks > task-progress").first.get_attribute("task-id")
        assert task_id, "the new <task-progress> has no task-id"
        return task_id

    def bar(self, task_id: str) -> str:
        """A selector for the element of one task."""
        return f'task-progress[task-id="{task_id}"]'

    def wait_state(self, task_id: str, state: str, timeout_ms: int = 30_000) -> None:
        self.page.locator(f'{self.bar(task_id)}[data-state="{state}"]').wait_for(timeout=timeout_ms)


@pytest.fixture
def demo(browser: Browser, site: str) -> Iterator[DemoPage]:
    context = browser.new_context(base_url=site, viewport={"width": 900, "height": 700})
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    page = context.new_page()
    opened = DemoPage(page)
    page.on("websocket", lambda socket: opened.opened(socket))
    page.on("pageerror", lambda error: opened.errors.append(str(error)))
    try:
        page.goto("/")
        yield opened
        assert opened.errors == [], f"the page threw: {opened.errors}"
    finally:
        context.close()


# -- the client alone, against a scripted fake WebSocket ------------------------

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
HARNESS_ORIGIN = "http://taskpulse.test"
HARNESS_PAGE = "<!doctype html><meta charset=utf-8><title>harness</title><body></body>"

# Replaces window.WebSocket before any module loads. Tests drive each socket
# by hand: serverOpen(), serverSend(frame), serverDrop(); `sent` holds the
# frames the client sent, decoded.
FAKE_SOCKET_JS = """
class FakeSocket {
  constructor(url) {
    this.url = url; this.readyState = 0; this.sent = []; this.closed = false;
    FakeSocket.all.push(this);
  }
  send(text) { this.sent.push(JSON.parse(text)); }
  close() { this.closed = true; this.readyState = 3; }
  serverOpen() { this.readyState = 1; this.onopen?.({}); }
  serverSend(frame) { this.onmessage?.({ data: JSON.stringify(frame) }); }
  serverDrop() { this.readyState = 3; this.onclose?.({ code: 1006 }); }
}
FakeSocket.all = [];
FakeSocket.last = () => FakeSocket.all[FakeSocket.all.length - 1];
window.FakeSocket = FakeSocket;
window.WebSocket = FakeSocket;

// A task object of PROTOCOL.md §3 with the given fields changed.
window.taskObject = (taskId, fields = {}) => ({
  task_id: taskId, name: "demo.count", epoch: "E1", seq: 1, state: "PENDING", final: false,
  progress: { current: 0, total: 10, percent: 0, message: null }, eta: null, meta: {},
  result: null, error: null, updated_at: "2026-11-21T13:14:15.123456Z", ...fields,
});
// Poll `check` every 10 ms; reject after `timeoutMs`, so no wait is unbounded.
window.waitFor = async (check, timeoutMs = 5000) => {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${check}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
};
"""


def _serve_static(route: Route) -> None:
    path = route.request.url.removeprefix(HARNESS_ORIGIN)
    if path == "/":
        route.fulfill(status=200, content_type="text/html", body=HARNESS_PAGE)
        return
    file = (STATIC_DIR / path.removeprefix("/static/")).resolve()
    if not path.startswith("/static/") or not file.is_relative_to(STATIC_DIR) or not file.is_file():
        route.fulfill(status=404, body="not found")
        return
    content_type = "text/javascript" if file.suffix == ".js" else "text/css"
    route.fulfill(status=200, content_type=content_type, body=file.read_bytes())


@pytest.fixture
def harness(browser: Browser) -> Iterator[Page]:
    """A blank page whose /static/ comes from the working tree and whose WebSocket is fake."""
    context = browser.new_context(base_url=HARNESS_ORIGIN)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    context.route(f"{HARNESS_ORIGIN}/**", _serve_static)
    context.add_init_script(FAKE_SOCKET_JS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto("/")
        yield page
        assert errors == [], f"the page threw: {errors}"
    finally:
        context.close()


class PageServer(ThreadingHTTPServer):
    """Serves one page and /static/ over plain HTTP, and refuses every WebSocket
    handshake with `refusal`: 403 as daphne answers an Origin outside the allowed
    hosts, 404 as a server with no WebSocket route (`runserver` without daphne). A
    real local server, not a Playwright route: Chromium lets only a page that came
    from a local address open a socket to one."""

    daemon_threads = True

    def __init__(self, page: str, refusal: int) -> None:
        super().__init__(("127.0.0.1", 0), _PageHandler)
        self.page = page
        self.refusal = refusal
        self.handshakes = 0
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _PageHandler(BaseHTTPRequestHandler):
    server: PageServer

    def do_GET(self) -> None:
        file = (STATIC_DIR / self.path.removeprefix("/static/")).resolve()
        is_static = self.path.startswith("/static/") and file.is_relative_to(STATIC_DIR)
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self.server.handshakes += 1
            self._answer(self.server.refusal, "text/plain", b"refused")
        elif self.path == "/":
            self._answer(200, "text/html", self.server.page.encode())
        elif is_static and file.is_file():
            content_type = "text/javascript" if file.suffix == ".js" else "text/css"
            self._answer(200, content_type, file.read_bytes())
        else:
            self._answer(404, "text/plain", b"not found")

    def _answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet test output


@contextmanager
def serving(server: PageServer) -> Iterator[PageServer]:
    """`server` answering on a thread of its own, for the block."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def opened_page(browser: Browser, base_url: str) -> Iterator[tuple[Page, list[str]]]:
    """A fresh context's page at `base_url` (not yet loaded), and the page errors it
    raises; the context is closed after the block."""
    context = browser.new_context(base_url=base_url)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page, errors
    finally:
        context.close()
