"""The JS client and <task-progress> on a bad day (issue 11, point 12): close codes
that retrying cannot fix, a server at capacity, a refused handshake (also against
a real socket that answers 403), listeners left behind by close(), options of the
shared client that depended on load order, and the `done` promise."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.browser.conftest import HARNESS_PAGE, PageServer, opened_page, serving

# The fake socket of conftest.py closes only with 1006; the server can say more.
SERVER_CLOSE = """
FakeSocket.prototype.serverClose = function (code, reason = "") {
  this.readyState = 3;
  this.onclose?.({ code, reason });
};
"""

# A fresh client with fast backoff; `events` records its `connection` events.
IMPORT_CLIENT = """
  const { TaskPulseClient, tryAgainLaterDelay } = await import("/static/taskpulse/client.js");
  const options = { minDelay: 20, maxDelay: 40, ...(window.clientOptions ?? {}) };
  const client = new TaskPulseClient(options);
  const events = [];
  client.addEventListener("connection", (e) => {
    events.push({ ...e.detail, error: e.detail.error?.code });
  });
  const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  // How a promise settled: a rejection's [code, message], or "pending" after `ms`.
  const outcomeOf = (promise, ms = 1000) => Promise.race([
    promise.then(() => "resolved", (e) => [e.code, e.message]),
    pause(ms).then(() => "pending"),
  ]);
"""

# Adds one <task-progress task-id=t1 token=tok> and opens the shared socket.
MOUNT_ELEMENT = """async () => {
  await import("/static/taskpulse/task-progress.js");
  const element = document.createElement("task-progress");
  element.setAttribute("task-id", "t1");
  element.setAttribute("token", "tok");
  document.body.append(element);
  await waitFor(() => FakeSocket.all.length === 1);
  FakeSocket.last().serverOpen();
  const running = taskObject("t1", { seq: 3, state: "PROGRESS" });
  FakeSocket.last().serverSend({ type: "snapshot", ...running });
}"""


def run(page: Page, body: str, options: dict[str, Any] | None = None) -> Any:
    """Run `body` in the page with a fresh `client`, `events` and `pause` in scope."""
    page.evaluate(SERVER_CLOSE)
    page.evaluate("options => { window.clientOptions = options; }", options or {})
    return page.evaluate(f"async () => {{ {IMPORT_CLIENT} {body} }}")


# -- 1. close codes -------------------------------------------------------------

@pytest.mark.parametrize(("close_code", "code"), [
    (4008, "policy_violation"), (4009, "message_too_big"),
    # revision 1 of PROTOCOL.md §4: still understood
    (1008, "policy_violation"), (1003, "unsupported_data"), (1009, "message_too_big"),
])
def test_final_close_codes_stop_with_an_error(harness: Page, close_code: int, code: str) -> None:
    """4008 and 4009 (1008, 1003, 1009) would come again on a new socket: no reconnect,
    an error instead."""
    outcome = run(harness, f"""
      const sub = client.subscribe("a", "tok");
      const errors = [];
      sub.addEventListener("error", (e) => errors.push(e.detail.code));
      FakeSocket.last().serverOpen();
      const running = taskObject("a", {{ state: "PROGRESS" }});
      FakeSocket.last().serverSend({{ type: "snapshot", ...running }});
      FakeSocket.last().serverClose({close_code}, "bye");
      await pause(300); // a blip would have reconnected 10 times by now
      const rejected = await outcomeOf(sub.done);
      return {{ sockets: FakeSocket.all.length, status: client.status, error: client.error?.code,
               errors, rejected, last: events.at(-1), watched: client.subscriptions.size }};
    """)
    assert outcome["sockets"] == 1
    assert (outcome["status"], outcome["error"], outcome["errors"]) == ("failed", code, [code])
    assert outcome["rejected"][0] == code and "(bye)" in outcome["rejected"][1]
    assert outcome["last"] == {"status": "failed", "error": code, "closeCode": close_code}
    assert outcome["watched"] == 0


@pytest.mark.parametrize("close_code", [4013, 4029, 1013])
def test_try_again_later_waits_at_least_30_s(harness: Page, close_code: int) -> None:
    """4013 (server at capacity), 4029 (too many sockets from this address) and
    revision 1's 1013 wait 30-60 s, not the 20-40 ms backoff of a blip."""
    outcome = run(harness, f"""
      client.subscribe("a", "tok");
      FakeSocket.last().serverOpen();
      FakeSocket.last().serverClose({close_code}, "at capacity");
      await pause(300);
      return {{ sockets: FakeSocket.all.length, status: client.status, last: events.at(-1) }};
    """)
    assert (outcome["sockets"], outcome["status"]) == (1, "reconnecting")
    assert 30_000 <= outcome["last"]["delay"] < 60_000
    bounds = run(harness, "return [0, 0.5, 0.9999].map((r) => tryAgainLaterDelay(30000, () => r));")
    assert bounds == [30_000, 45_000, 59_997]


def test_slow_reader_cut_resumes_after_a_pause(harness: Page) -> None:
    """4010 (this page left frames unread too long) is not final: the client waits at
    least minDelay, reconnects and resumes from the last seq it saw."""
    outcome = run(harness, """
      client.subscribe("a", "tok");
      FakeSocket.last().serverOpen();
      const running = taskObject("a", { seq: 7, state: "PROGRESS" });
      FakeSocket.last().serverSend({ type: "snapshot", ...running });
      FakeSocket.last().serverClose(4010, "slow reader");
      const waiting = { status: client.status, delay: events.at(-1).delay };
      await waitFor(() => FakeSocket.all.length === 2);
      FakeSocket.last().serverOpen();
      return { waiting, minDelay: client.options.minDelay, error: client.error,
               sent: FakeSocket.last().sent };
    """)
    assert outcome["waiting"]["status"] == "reconnecting" and outcome["error"] is None
    assert outcome["waiting"]["delay"] >= outcome["minDelay"]
    assert outcome["sent"][0]["since"] == 7


@pytest.mark.parametrize("close_code", [1012, 1001, 1011, 1006, 4011])
def test_restart_and_blips_reconnect_with_backoff(harness: Page, close_code: int) -> None:
    """1012 (service restart) and other closes after an open reconnect and resume as before."""
    outcome = run(harness, f"""
      client.subscribe("a", "tok");
      FakeSocket.last().serverOpen();
      const running = taskObject("a", {{ seq: 4, state: "PROGRESS" }});
      FakeSocket.last().serverSend({{ type: "snapshot", ...running }});
      FakeSocket.last().serverClose({close_code});
      await waitFor(() => FakeSocket.all.length === 2);
      FakeSocket.last().serverOpen();
      return {{ status: client.status, sent: FakeSocket.last().sent }};
    """)
    assert outcome["status"] == "open"
    assert outcome["sent"] == [{"type": "subscribe", "task_id": "a", "token": "tok", "since": 4,
                                "epoch": "E1"}]


def test_one_refused_handshake_is_retried(harness: Page) -> None:
    """A 1006 before open may be a network blip: the next attempt goes ahead and works."""
    outcome = run(harness, """
      client.subscribe("a", "tok");
      FakeSocket.last().serverDrop();
      await waitFor(() => FakeSocket.all.length === 2);
      FakeSocket.last().serverOpen();
      return { status: client.status, sent: FakeSocket.last().sent.map((f) => f.type) };
    """)
    assert outcome == {"status": "open", "sent": ["subscribe"]}


def test_repeatedly_refused_handshake_stops_with_an_error(harness: Page) -> None:
    """Five handshakes in a row closed before opening (never opened before): refused, stop."""
    outcome = run(harness, """
      const sub = client.subscribe("a", "tok");
      for (let n = 1; n <= 5; n += 1) {
        await waitFor(() => FakeSocket.all.length === n);
        FakeSocket.last().serverDrop();
      }
      await pause(300);
      const rejected = await outcomeOf(sub.done);
      return { sockets: FakeSocket.all.length, status: client.status, rejected };
    """)
    assert (outcome["sockets"], outcome["status"]) == (5, "failed")
    assert outcome["rejected"][0] == "connection_refused"
    # The browser cannot tell an origin refusal (403) from no WebSocket server (404):
    # the message names both, and where to read more.
    message = outcome["rejected"][1]
    assert "refused the WebSocket connection" in message
    assert "allowed hosts" in message and "no WebSocket server" in message
    assert "Troubleshooting" in message


def test_a_server_that_once_accepted_is_never_given_up(harness: Page) -> None:
    """After one open, failed handshakes are a restart or an outage: keep trying."""
    outcome = run(harness, """
      client.subscribe("a", "tok");
      FakeSocket.last().serverOpen();
      FakeSocket.last().serverDrop();
      for (let n = 2; n <= 10; n += 1) {
        await waitFor(() => FakeSocket.all.length === n);
        FakeSocket.last().serverDrop();
      }
      await waitFor(() => FakeSocket.all.length === 11);
      return { status: client.status };
    """)
    assert outcome == {"status": "connecting"}


def test_subscribe_after_a_failure_tries_again(harness: Page) -> None:
    """A failure ends the subscriptions of the time; a later subscribe is a new attempt."""
    outcome = run(harness, """
      client.subscribe("a", "tok");
      FakeSocket.last().serverOpen();
      FakeSocket.last().serverClose(1008);
      const failed = client.status;
      client.subscribe("b", "tok");
      FakeSocket.last().serverOpen();
      return { failed, status: client.status, error: client.error,
               sent: FakeSocket.last().sent.map((f) => f.task_id) };
    """)
    assert outcome == {"failed": "failed", "status": "open", "error": None, "sent": ["b"]}


def test_element_shows_a_final_close(harness: Page) -> None:
    """The element shows why the connection stopped: text, data-error, no cancel button."""
    harness.evaluate(SERVER_CLOSE)
    harness.evaluate(MOUNT_ELEMENT)
    element = harness.locator("task-progress")
    assert element.get_by_role("button", name="Cancel").is_visible()
    harness.evaluate("FakeSocket.last().serverClose(1008)")
    harness.locator('task-progress[data-error="policy_violation"]').wait_for()
    outcome = element.locator(".taskpulse-outcome")
    assert outcome.is_visible()
    text = outcome.inner_text()
    assert "policy violation" in text and "Reload the page" in text
    assert element.get_by_role("button", name="Cancel").is_hidden()
    rejected = harness.evaluate("""Promise.race([
      document.querySelector("task-progress").done.then(() => null, (e) => e.code),
      new Promise((resolve) => setTimeout(() => resolve("pending"), 1000)),
    ])""")
    assert rejected == "policy_violation"


@pytest.fixture
def refusing_server() -> Iterator[PageServer]:
    """The harness page, served by a server that answers every handshake with 403."""
    with serving(PageServer(HARNESS_PAGE, 403)) as server:
        yield server


def test_real_403_handshake_is_shown_as_refused(browser: Browser,
                                                refusing_server: PageServer) -> None:
    """Chromium's own WebSocket, refused with 403: the client stops and the element says so."""
    with opened_page(browser, refusing_server.url) as (page, errors):
        page.goto("/")
        status = page.evaluate("""async () => {
          const { sharedClient } = await import("/static/taskpulse/client.js");
          sharedClient({ minDelay: 10, maxDelay: 20 });
          await import("/static/taskpulse/task-progress.js");
          const element = document.createElement("task-progress");
          element.setAttribute("task-id", "t1");
          element.setAttribute("token", "tok");
          document.body.append(element);
          const closes = [];
          sharedClient().addEventListener("connection", (e) => {
            if (e.detail.status === "failed") closes.push(e.detail.closeCode);
          });
          // Five refusals take well under a second with this backoff; a client that
          // retries forever is still at it after three.
          await Promise.race([
            new Promise((resolve) => element.addEventListener("taskpulse:error", resolve)),
            new Promise((resolve) => setTimeout(resolve, 3000)),
          ]);
          return { status: sharedClient().status, closes };
        }""")
        assert status == {"status": "failed", "closes": [1006]}
        element = page.locator('task-progress[data-error="connection_refused"]')
        assert "refused the connection" in element.locator(".taskpulse-outcome").inner_text()
        assert refusing_server.handshakes == 5
        assert errors == []


# -- 2. close() removes its listeners ---------------------------------------------

def test_close_removes_page_listeners(harness: Page) -> None:
    """After close(), window and document have exactly the listeners they had before."""
    cdp = harness.context.new_cdp_session(harness)

    def listeners() -> list[str]:
        found = []
        for target in ("window", "document"):
            handle = cdp.send("Runtime.evaluate", {"expression": target})["result"]["objectId"]
            found += [f"{target}:{listener['type']}" for listener in
                      cdp.send("DOMDebugger.getEventListeners", {"objectId": handle})["listeners"]]
        return sorted(found)

    harness.evaluate("""async () => {
      const { TaskPulseClient } = await import("/static/taskpulse/client.js");
      window.TaskPulseClient = TaskPulseClient;
    }""")
    before = listeners()
    harness.evaluate("""() => {
      window.client = new TaskPulseClient();
      client.subscribe("a", "tok");
      FakeSocket.last().serverOpen();
    }""")
    watching = listeners()
    harness.evaluate("client.close()")
    assert len(watching) > len(before)  # it does listen (online, offline, visibilitychange)
    assert listeners() == before
    harness.evaluate("""() => { client.subscribe("b", "tok"); client.close(); }""")
    assert listeners() == before  # a reused client adds them again, and removes them again


# -- 3. configuring the shared client in any order -----------------------------------

@pytest.mark.parametrize("call", [
    'configure({ url: "ws://elsewhere.test/ws/progress/" })',
    'sharedClient({ url: "ws://elsewhere.test/ws/progress/" })',
])
def test_options_after_the_element_created_the_client(harness: Page, call: str) -> None:
    """The element came first; page options still apply: it reconnects to the new url, resumes."""
    harness.evaluate(MOUNT_ELEMENT)
    outcome = harness.evaluate(f"""async () => {{
      const {{ configure, sharedClient }} = await import("/static/taskpulse/client.js");
      const first = FakeSocket.last();
      {call};
      await waitFor(() => FakeSocket.all.length === 2);
      FakeSocket.last().serverOpen();
      return {{ firstUrl: first.url, firstClosed: first.closed, url: FakeSocket.last().url,
               sent: FakeSocket.last().sent, status: sharedClient().status }};
    }}""")
    assert outcome["firstUrl"] == "ws://taskpulse.test/ws/progress/" and outcome["firstClosed"]
    assert outcome["url"] == "ws://elsewhere.test/ws/progress/" and outcome["status"] == "open"
    assert outcome["sent"] == [{"type": "subscribe", "task_id": "t1", "token": "tok", "since": 3,
                                "epoch": "E1"}]


def test_options_before_the_element_loads(harness: Page) -> None:
    """configure() before the element module loads: the first socket already uses them."""
    url = harness.evaluate("""async () => {
      const { configure } = await import("/static/taskpulse/client.js");
      configure({ url: "ws://elsewhere.test/ws/progress/" });
      await import("/static/taskpulse/task-progress.js");
      const element = document.createElement("task-progress");
      element.setAttribute("task-id", "t1");
      document.body.append(element);
      await waitFor(() => FakeSocket.all.length === 1);
      return FakeSocket.last().url;
    }""")
    assert url == "ws://elsewhere.test/ws/progress/"


def test_element_resolves_the_shared_client_when_added(harness: Page) -> None:
    """A constructed element does not create the shared client: a later configure() comes first."""
    outcome = harness.evaluate("""async () => {
      await import("/static/taskpulse/task-progress.js");
      const element = document.createElement("task-progress");
      element.setAttribute("task-id", "t1");
      const { configure, sharedClient } = await import("/static/taskpulse/client.js");
      configure({ url: "ws://elsewhere.test/ws/progress/", pingInterval: 1234 });
      document.body.append(element);
      await waitFor(() => FakeSocket.all.length === 1);
      return { url: FakeSocket.last().url, same: element.client === sharedClient(),
               ping: sharedClient().options.pingInterval };
    }""")
    assert outcome == {"url": "ws://elsewhere.test/ws/progress/", "same": True, "ping": 1234}


# -- 4. one `done` promise ------------------------------------------------------------

def test_element_done_is_one_handled_promise(harness: Page) -> None:
    """Without a task-id, `done` is one rejected promise, not a new unhandled one per access."""
    outcome = harness.evaluate("""async () => {
      const unhandled = [];
      window.addEventListener("unhandledrejection", (e) => {
        unhandled.push(String(e.reason));
        e.preventDefault();
      });
      await import("/static/taskpulse/task-progress.js");
      const element = document.createElement("task-progress");
      const promises = [element.done, element.done, element.done];
      await new Promise((resolve) => setTimeout(resolve, 100));
      const reason = await element.done.then(() => null, (e) => e.message);
      return { same: promises.every((p) => p === promises[0]), unhandled, reason };
    }""")
    assert outcome == {"same": True, "unhandled": [], "reason": "no task-id to watch"}


def test_element_done_before_it_is_added_follows_the_task(harness: Page) -> None:
    """`done` read before the element is added is the same promise, and settles with the task."""
    outcome = harness.evaluate("""async () => {
      const unhandled = [];
      window.addEventListener("unhandledrejection", (e) => {
        unhandled.push(String(e.reason));
        e.preventDefault();
      });
      await import("/static/taskpulse/task-progress.js");
      const element = document.createElement("task-progress");
      element.setAttribute("task-id", "t1");
      element.setAttribute("token", "tok");
      const early = element.done;
      document.body.append(element);
      await waitFor(() => FakeSocket.all.length === 1);
      FakeSocket.last().serverOpen();
      const same = element.done === early;
      FakeSocket.last().serverSend({ type: "snapshot", ...taskObject("t1", {
        seq: 9, state: "SUCCESS", final: true, result: { steps: 3 } }) });
      const result = (await early).result;
      element.setAttribute("task-id", "t2");
      const other = element.done !== early;
      FakeSocket.last().serverSend({ type: "snapshot", ...taskObject("t2", {
        seq: 2, state: "FAILURE", final: true, error: { type: "ValueError", message: "boom" } }) });
      const failed = await element.done.then(() => null, (e) => e.code);
      await new Promise((resolve) => setTimeout(resolve, 100));
      return { same, result, other, failed, unhandled };
    }""")
    assert outcome == {"same": True, "result": {"steps": 3}, "other": True, "failed": "FAILURE",
                       "unhandled": []}
