"""The browser client (static/taskpulse/client.js) against a scripted fake WebSocket:
resume, ordering, liveness and offline rules that a real server rarely provokes."""

from typing import Any

from playwright.sync_api import Page

from progress.wire.states import FINAL_STATES, UNKNOWN, State

IMPORT_CLIENT = """
  const { TaskPulseClient, backoffDelay } = await import("/static/taskpulse/client.js");
  const options = { minDelay: 20, maxDelay: 40, ...(window.clientOptions ?? {}) };
  const client = new TaskPulseClient(options);
"""


def run(page: Page, body: str, options: dict[str, Any] | None = None) -> Any:
    """Run `body` in the page with a fresh `client` (fast backoff) in scope."""
    page.evaluate("options => { window.clientOptions = options; }", options or {})
    return page.evaluate(f"async () => {{ {IMPORT_CLIENT} {body} }}")


def test_reconnect_resumes_with_since_and_epoch(harness: Page) -> None:
    """After a drop, an unfinished task is resubscribed from its last seq; a final one is not."""
    frames = run(harness, """
      client.subscribe("a", "tok-a");
      client.subscribe("b", "tok-b");
      const first = FakeSocket.last();
      first.serverOpen();
      first.serverSend({ type: "snapshot", ...taskObject("a", { seq: 3, state: "PROGRESS" }) });
      first.serverSend({ type: "event", ...taskObject("a", { seq: 4, state: "PROGRESS" }) });
      const finished = taskObject("b", { seq: 5, state: "SUCCESS", final: true });
      first.serverSend({ type: "snapshot", ...finished });
      first.serverDrop();
      await waitFor(() => FakeSocket.all.length === 2);
      FakeSocket.last().serverOpen();
      return { first: first.sent, second: FakeSocket.last().sent };
    """)
    assert frames["first"] == [
        {"type": "subscribe", "task_id": "a", "token": "tok-a"},
        {"type": "subscribe", "task_id": "b", "token": "tok-b"},
    ]
    assert frames["second"] == [
        {"type": "subscribe", "task_id": "a", "token": "tok-a", "since": 4, "epoch": "E1"},
    ]


def test_stale_frames_are_dropped_and_reset_snapshot_wins(harness: Page) -> None:
    """Frames with seq <= the last seen are ignored; a reset snapshot replaces the task."""
    seen = run(harness, """
      const sub = client.subscribe("a", "tok");
      const seen = [];
      sub.addEventListener("progress", (e) => seen.push([e.detail.task.epoch, e.detail.task.seq]));
      const socket = FakeSocket.last();
      socket.serverOpen();
      socket.serverSend({ type: "resumed", task_id: "a", epoch: "E1", seq: 0 });
      for (const seq of [1, 2, 2, 1, 3]) {
        socket.serverSend({ type: "event", ...taskObject("a", { seq, state: "PROGRESS" }) });
      }
      const reborn = taskObject("a", { epoch: "E2", seq: 1 });
      socket.serverSend({ type: "snapshot", reset: true, ...reborn });
      socket.serverSend({ type: "event", ...taskObject("a", { epoch: "E2", seq: 1 }) });
      return seen;
    """)
    assert seen == [["E1", 1], ["E1", 2], ["E1", 3], ["E2", 1]]


def test_done_promise_settles_on_final_state(harness: Page) -> None:
    """`done` resolves with the task on SUCCESS and rejects with a TaskError on FAILURE."""
    outcome = run(harness, """
      const ok = client.subscribe("ok", "t");
      const bad = client.subscribe("bad", "t");
      const socket = FakeSocket.last();
      socket.serverOpen();
      socket.serverSend({ type: "snapshot", ...taskObject("ok", { seq: 2, state: "SUCCESS",
                                                                 final: true, result: 7 }) });
      socket.serverSend({ type: "snapshot", ...taskObject("bad", {
        seq: 2, state: "FAILURE", final: true, error: { type: "ValueError", message: "boom" } }) });
      const result = (await ok.done).result;
      const error = await bad.done.then(() => null, (e) => [e.name, e.code, e.message]);
      return { result, error, watched: client.subscriptions.size };
    """)
    assert outcome == {"result": 7, "error": ["TaskError", "FAILURE", "boom"], "watched": 0}


def test_refused_subscribe_rejects_and_is_not_retried(harness: Page) -> None:
    """A `forbidden` answer to subscribe ends the subscription with an error event."""
    outcome = run(harness, """
      const sub = client.subscribe("a", "bad-token");
      const codes = [];
      sub.addEventListener("error", (e) => codes.push(e.detail.code));
      const socket = FakeSocket.last();
      socket.serverOpen();
      socket.serverSend({ type: "error", code: "forbidden", detail: "token invalid",
                          task_id: "a" });
      const rejected = await sub.done.then(() => null, (e) => e.code);
      return { codes, rejected, watched: client.subscriptions.size };
    """)
    assert outcome == {"codes": ["forbidden"], "rejected": "forbidden", "watched": 0}


def test_missing_pong_means_dead_connection(harness: Page) -> None:
    """A socket that stops answering pings is abandoned and a new one is opened."""
    outcome = run(harness, """
      client.subscribe("a", "tok");
      const first = FakeSocket.last();
      first.serverOpen();
      await waitFor(() => first.sent.some((f) => f.type === "ping"));
      await waitFor(() => FakeSocket.all.length === 2);
      return { closed: first.closed, pings: first.sent.filter((f) => f.type === "ping").length };
    """, {"pingInterval": 50, "pongTimeout": 50})
    assert outcome == {"closed": True, "pings": 1}


def test_pong_keeps_connection(harness: Page) -> None:
    """Answered pings keep the one socket open."""
    sockets = run(harness, """
      client.subscribe("a", "tok");
      const socket = FakeSocket.last();
      socket.serverOpen();
      const answered = new Set();
      const started = Date.now();
      while (Date.now() - started < 400) {
        for (const f of socket.sent) {
          if (f.type === "ping" && !answered.has(f.id)) {
            answered.add(f.id);
            socket.serverSend({ type: "pong", id: f.id });
          }
        }
        await new Promise((r) => setTimeout(r, 10));
      }
      return { sockets: FakeSocket.all.length, pings: answered.size };
    """, {"pingInterval": 50, "pongTimeout": 100})
    assert sockets["sockets"] == 1 and sockets["pings"] >= 3


def test_offline_pauses_reconnect_until_online(harness: Page) -> None:
    """While the browser is offline no reconnect is tried; `online` retries at once."""
    run(harness, """
      window.client = client;
      client.subscribe("a", "tok");
      FakeSocket.last().serverOpen();
    """, {"minDelay": 60_000, "maxDelay": 60_000})
    harness.context.set_offline(True)
    status = harness.evaluate("""async () => {
      FakeSocket.last().serverDrop();
      await new Promise((r) => setTimeout(r, 200));
      return [client.status, FakeSocket.all.length];
    }""")
    assert status == ["offline", 1]
    harness.context.set_offline(False)
    # With a 60 s backoff, only the `online` event can explain a prompt new socket.
    harness.wait_for_function("FakeSocket.all.length === 2", timeout=5_000)
    assert harness.evaluate("client.status") == "connecting"


def test_backoff_has_full_jitter_between_bounds(harness: Page) -> None:
    """Delays are random in [0, min(20 s, 0.5 s * 2^attempt))."""
    caps = run(harness, """
      return [0, 1, 2, 5, 6, 10].map((n) => backoffDelay(n, 500, 20000, () => 0.999999));
    """)
    assert caps == [499, 999, 1999, 15999, 19999, 19999]
    assert run(harness, "return backoffDelay(3, 500, 20000, () => 0);") == 0


def test_cancel_sends_token_and_resolves_on_cancelling(harness: Page) -> None:
    """`cancel()` sends the task's token and resolves on the `cancelling` answer."""
    outcome = run(harness, """
      const sub = client.subscribe("a", "tok");
      const socket = FakeSocket.last();
      socket.serverOpen();
      socket.serverSend({ type: "snapshot", ...taskObject("a", { state: "PROGRESS" }) });
      const pending = sub.cancel();
      socket.serverSend({ type: "cancelling", task_id: "a" });
      const answer = await pending;
      const refused = client.cancel("a");
      socket.serverSend({ type: "error", code: "not_cancellable", detail: "task is already REVOKED",
                          task_id: "a" });
      const error = await refused.then(() => null, (e) => e.code);
      return { sent: socket.sent.filter((f) => f.type === "cancel"), answer, error };
    """)
    assert outcome["sent"] == [{"type": "cancel", "task_id": "a", "token": "tok"}] * 2
    assert outcome["answer"] == {"type": "cancelling", "task_id": "a"}
    assert outcome["error"] == "not_cancellable"


def test_states_match_the_server(harness: Page) -> None:
    """The client's final states, and the element's state words, match progress/wire/states.py."""
    names = harness.evaluate("""async () => {
      const client = await import("/static/taskpulse/client.js");
      const element = await import("/static/taskpulse/task-progress.js");
      return { final: [...client.FINAL_STATES], unknown: client.UNKNOWN,
               labelled: Object.keys(element.STATE_LABELS) };
    }""")
    assert sorted(names["final"]) == sorted(FINAL_STATES)
    assert names["unknown"] == UNKNOWN
    assert sorted(names["labelled"]) == sorted([*State, UNKNOWN])
