"""What <task-progress> says when a newcomer's set-up is wrong (issue 17): a stylesheet
that did not load, a script that never ran, a WebSocket refused (404 or 403), and a
task that stays queued because no worker with TaskPulse reports it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.template import Context, Template
from playwright.sync_api import Browser, Page, Route

from tests.browser.conftest import STATIC_DIR, PageServer, opened_page, serving

RENDERED = Template(
    "{% load taskpulse %}<!doctype html><head><meta charset=utf-8>{% taskpulse_scripts %}"
    "</head><body>{% task_progress 't1' %}</body>"
)
ELEMENT = "task-progress"

# The element with fast reconnects, on the fake socket of conftest.py; opened.
MOUNT = """async (attributes) => {
  const { configure } = await import("/static/taskpulse/client.js");
  configure({ minDelay: 10, maxDelay: 20 });
  await import("/static/taskpulse/task-progress.js");
  const element = document.createElement("task-progress");
  element.setAttribute("task-id", "t1");
  element.setAttribute("token", "tok");
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  document.body.append(element);
  await waitFor(() => FakeSocket.all.length === 1);
}"""


def rendered_page(harness: Page, css_type: str = "text/css", js_status: int = 200) -> None:
    """Load the page the template tags render, its stylesheet served as `css_type` and
    its element's script answered with `js_status`; wait for the page's load event."""
    html = RENDERED.render(Context())

    def serve_page(route: Route) -> None:
        route.fulfill(status=200, content_type="text/html", body=html)

    def serve_css(route: Route) -> None:
        body = (STATIC_DIR / "taskpulse" / "taskpulse.css").read_bytes()
        route.fulfill(status=200, content_type=css_type, body=body)

    def serve_js(route: Route) -> None:
        route.fulfill(status=js_status, content_type="text/html", body="<h1>Not Found</h1>")

    harness.route("**/rendered/", serve_page)
    harness.route("**/static/taskpulse/taskpulse.css", serve_css)
    if js_status != 200:
        harness.route("**/static/taskpulse/task-progress.js", serve_js)
    harness.goto("/rendered/", wait_until="load")


def test_stylesheet_refused_is_said_by_the_element(harness: Page) -> None:
    """The script ran but taskpulse.css was refused (served as text/plain, as a server
    without static files set up does): the element says which file and where to look."""
    rendered_page(harness, css_type="text/plain")
    harness.locator(f'{ELEMENT}[data-warning="stylesheet"]').wait_for()
    warning = harness.locator(".taskpulse-warning")
    assert warning.is_visible()
    text = warning.inner_text()
    assert "taskpulse.css" in text and "did not load" in text and "Static files" in text


def test_loaded_stylesheet_gives_no_warning(harness: Page) -> None:
    """With the stylesheet applied, the element is styled and says nothing about it."""
    rendered_page(harness)
    harness.wait_for_function("FakeSocket.all.length === 1")
    element = harness.locator(ELEMENT)
    assert element.evaluate("e => getComputedStyle(e).display") == "block"
    harness.wait_for_timeout(200)
    assert element.get_attribute("data-warning") is None
    assert harness.locator(".taskpulse-warning").is_hidden()
    assert "If this text stays" not in element.inner_text()


def test_element_never_upgraded_shows_why(harness: Page) -> None:
    """task-progress.js is 404 (static files not served): the rendered tag's own text
    says the script did not run, and which file to check."""
    rendered_page(harness, js_status=404)
    element = harness.locator(ELEMENT)
    text = element.inner_text()
    assert "Loading progress of task t1" in text
    assert "If this text stays, the progress bar's script did not run" in text
    assert "/static/taskpulse/task-progress.js" in text and "Static files" in text
    assert harness.locator(f"{ELEMENT} .taskpulse-bar").count() == 0


def test_refused_connection_names_both_causes(harness: Page) -> None:
    """Handshakes that keep failing before open: the element names a missing WebSocket
    server (404) and a refused origin (403), and the Troubleshooting entry."""
    harness.evaluate(MOUNT, {})
    harness.evaluate("""async () => {
      for (let n = 1; n <= 5; n += 1) {
        await waitFor(() => FakeSocket.all.length === n);
        FakeSocket.last().serverDrop();
      }
    }""")
    harness.locator(f'{ELEMENT}[data-error="connection_refused"]').wait_for()
    check_refused_text(harness.locator(".taskpulse-outcome").inner_text())


def check_refused_text(text: str) -> None:
    assert "refused the connection to ws://" in text, text
    assert "404" in text and "runserver without \"daphne\"" in text, text
    assert "403" in text and "allowed hosts" in text, text
    assert "Troubleshooting" in text and "Reload the page" in text, text


@pytest.fixture
def no_websocket_server() -> Iterator[PageServer]:
    # Fast reconnects, configured before the element creates the shared client.
    page = RENDERED.render(Context()).replace(
        "<head>", '<head><script type="module">import { configure } from '
        '"/static/taskpulse/client.js"; configure({ minDelay: 10, maxDelay: 20 });</script>', 1)
    # runserver without daphne: a plain HTTP server with no WebSocket route
    with serving(PageServer(page, 404)) as server:
        yield server


def test_real_404_handshake_is_not_blamed_on_the_origin(
        browser: Browser, no_websocket_server: PageServer) -> None:
    """Chromium's own WebSocket against a server with no WebSocket route (404, as under
    `runserver` without daphne): the element names the 404 cause as well as the origin."""
    with opened_page(browser, no_websocket_server.url) as (page, errors):
        page.goto("/")
        page.locator(f'{ELEMENT}[data-error="connection_refused"]').wait_for()
        check_refused_text(page.locator(".taskpulse-outcome").inner_text())
        assert no_websocket_server.handshakes == 5
        assert errors == []


def test_task_queued_too_long_suggests_a_worker_without_taskpulse(harness: Page) -> None:
    """PENDING with no STARTED for `queued-hint-after` seconds: the element says the task
    may be on a worker without TaskPulse or on another Redis or prefix; STARTED clears it."""
    harness.evaluate(MOUNT, {"queued-hint-after": "0.3"})
    harness.evaluate("""() => {
      FakeSocket.last().serverOpen();
      FakeSocket.last().serverSend({ type: "snapshot", ...taskObject("t1") });
    }""")
    element = harness.locator(ELEMENT)
    assert element.get_attribute("data-state") == "PENDING"
    assert element.get_attribute("data-hint") is None
    harness.locator(f'{ELEMENT}[data-hint="queued"]').wait_for(timeout=3000)
    hint = harness.locator(".taskpulse-hint")
    assert hint.is_visible()
    text = hint.inner_text()
    assert text.startswith("Still queued after 0.3 s."), text
    assert "without TaskPulse" in text and "\"progress\" app" in text
    assert "TASKPULSE_KEY_PREFIX" in text and "Troubleshooting" in text
    harness.evaluate("""FakeSocket.last().serverSend(
      { type: "event", ...taskObject("t1", { seq: 2, state: "STARTED" }) })""")
    harness.locator(f'{ELEMENT}[data-state="STARTED"]').wait_for()
    assert element.get_attribute("data-hint") is None and hint.is_hidden()


def test_queued_hint_waits_30_seconds_by_default(harness: Page) -> None:
    """Without the attribute the hint waits QUEUED_HINT_AFTER (30 s); 0 turns it off."""
    harness.evaluate(MOUNT, {})
    delays = harness.evaluate("""async () => {
      const element = document.querySelector("task-progress");
      const { QUEUED_HINT_AFTER } = await import("/static/taskpulse/task-progress.js");
      const byDefault = element.queuedHintAfter;
      element.setAttribute("queued-hint-after", "0");
      return [QUEUED_HINT_AFTER, byDefault, element.queuedHintAfter];
    }""")
    assert delays == [30, 30, 0]
    harness.evaluate("""() => {
      FakeSocket.last().serverOpen();
      FakeSocket.last().serverSend({ type: "snapshot", ...taskObject("t1") });
    }""")
    harness.wait_for_timeout(300)
    assert harness.locator(ELEMENT).get_attribute("data-hint") is None
