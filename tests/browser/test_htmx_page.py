"""The example site's htmx page (/htmx/) in Chromium against the real stack: htmx and its
SSE extension keep a task's row live from the SSE stream's HTML format, with no
TaskPulse JavaScript, and close the stream at `end`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request

from tests.browser.conftest import ACTION_TIMEOUT_MS

AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
EVENTS_PATH = "/api/events/"
TASKPULSE_STATIC = "/static/taskpulse/"
RETRY_S = 1.0  # the stream's `retry:` (progress/web/sse_stream.py RETRY_MS)


@dataclass
class HtmxPage:
    page: Page
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def events(self) -> list[str]:
        return [url for url in self.requests if EVENTS_PATH in url]


@pytest.fixture
def htmx(browser: Browser, site: str) -> Iterator[HtmxPage]:
    context = browser.new_context(base_url=site)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    page = context.new_page()
    seen = HtmxPage(page)

    def request(req: Request) -> None:
        seen.requests.append(req.url)

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            seen.console_errors.append(message.text)

    page.on("request", request)
    page.on("console", console)
    page.on("pageerror", lambda error: seen.console_errors.append(str(error)))
    try:
        page.goto("/htmx/")
        yield seen
    finally:
        context.close()


def start(htmx: HtmxPage) -> str:
    htmx.page.get_by_role("button", name="Start a demo task").click()
    row = htmx.page.locator(".taskpulse-row [sse-swap]")
    row.wait_for()
    swap = row.get_attribute("sse-swap")
    assert swap and swap.startswith("task-")
    return swap.removeprefix("task-")


def test_row_follows_the_task_and_the_stream_closes(htmx: HtmxPage) -> None:
    """The row goes from its first state to SUCCESS at 100%; one stream, closed at `end`
    (no reconnect after it); no TaskPulse script requested; no console errors."""
    start(htmx)
    state = htmx.page.locator(".taskpulse-row .taskpulse-row-state")
    state.and_(htmx.page.locator('[data-state="PROGRESS"]')).wait_for(timeout=30_000)
    state.and_(htmx.page.locator('[data-state="SUCCESS"]')).wait_for(timeout=30_000)
    bar = htmx.page.locator(".taskpulse-row progress")
    assert bar.get_attribute("value") == "100"
    time.sleep(RETRY_S * 2.5)  # an EventSource left open would have reconnected by now
    assert len(htmx.events()) == 1, htmx.events()
    assert "format=html" in htmx.events()[0]
    assert not [url for url in htmx.requests if TASKPULSE_STATIC in url]
    assert htmx.console_errors == []


def test_no_accessibility_violations(htmx: HtmxPage) -> None:
    """axe-core (from a file, not a CDN) finds no violations, before and after a task."""
    assert axe_violations(htmx.page) == []
    start(htmx)
    htmx.page.locator('.taskpulse-row [data-state="SUCCESS"]').wait_for(timeout=30_000)
    assert axe_violations(htmx.page) == []
    assert htmx.console_errors == []


def axe_violations(page: Page) -> list[dict[str, Any]]:
    page.add_script_tag(path=str(AXE))
    result: list[dict[str, Any]] = page.evaluate(
        "async () => (await axe.run(document)).violations"
        ".map(v => ({id: v.id, nodes: v.nodes.map(n => n.html)}))")
    return result
