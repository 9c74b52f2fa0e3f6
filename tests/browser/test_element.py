"""The <task-progress> element (static/taskpulse/task-progress.js) fed by a fake WebSocket."""

from typing import Any

from django.template import Context, Template
from playwright.sync_api import Page, Route

from progress.tokens import Permission, verify_token

# Adds elements for the given [task-id, attributes] pairs, opens the shared socket.
MOUNT = """async (elements) => {
  await import("/static/taskpulse/task-progress.js");
  for (const [taskId, attributes] of elements) {
    const element = document.createElement("task-progress");
    element.setAttribute("task-id", taskId);
    for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
    document.body.append(element);
  }
  await waitFor(() => FakeSocket.all.length === 1);
  FakeSocket.last().serverOpen();
}"""

SEND = "frame => FakeSocket.last().serverSend(frame)"


def mount(page: Page, *elements: tuple[str, dict[str, str]]) -> None:
    page.evaluate(MOUNT, [list(e) for e in elements])


def send(page: Page, frame_type: str, task_id: str, **fields: Any) -> None:
    page.evaluate(
        "([type, taskId, fields]) => FakeSocket.last().serverSend("
        "{ type, ...taskObject(taskId, fields) })",
        [frame_type, task_id, fields],
    )


def bar(page: Page, task_id: str = "t1") -> dict[str, Any]:
    shown: dict[str, Any] = page.evaluate(
        """taskId => {
          const el = document.querySelector(`task-progress[task-id="${taskId}"]`);
          const progress = el.querySelector("progress");
          return {
            state: el.dataset.state, value: progress.getAttribute("value"),
            max: progress.getAttribute("max"),
            percent: el.querySelector(".taskpulse-percent").textContent,
            message: el.querySelector(".taskpulse-message").textContent,
            outcome: el.querySelector(".taskpulse-outcome").textContent,
            cancelHidden: el.querySelector(".taskpulse-cancel").hidden,
          };
        }""",
        task_id,
    )
    return shown


def test_progress_follows_frames(harness: Page) -> None:
    """UNKNOWN and indeterminate before data; then value/max/percent follow the frames."""
    mount(harness, ("t1", {"token": "tok"}))
    assert bar(harness)["state"] == "UNKNOWN" and bar(harness)["value"] is None
    indeterminate = {"current": 3, "total": None, "percent": None, "message": "warming up"}
    send(harness, "snapshot", "t1", state="STARTED", progress=indeterminate)
    assert bar(harness)["state"] == "STARTED" and bar(harness)["value"] is None
    assert harness.locator("progress").evaluate("p => p.matches(':indeterminate')")
    known = {"current": 4, "total": 10, "percent": 40.0, "message": "step 4 of 10"}
    send(harness, "event", "t1", seq=2, state="PROGRESS", progress=known, eta=75)
    shown = bar(harness)
    assert (shown["value"], shown["max"], shown["percent"]) == ("4", "10", "40%")
    assert shown["message"] == "step 4 of 10" and shown["cancelHidden"] is False
    eta = harness.locator(".taskpulse-eta").text_content()
    assert eta == "1 min 15 s left"


def test_final_success_shows_result_and_hides_cancel(harness: Page) -> None:
    """On SUCCESS the bar is full, the result shows and the cancel button goes."""
    mount(harness, ("t1", {"token": "tok"}))
    done = {"current": 10, "total": 10, "percent": 100.0, "message": "step 10 of 10"}
    send(harness, "snapshot", "t1", seq=12, state="SUCCESS", final=True, progress=done,
         result={"steps": 10})
    shown = bar(harness)
    assert (shown["state"], shown["value"], shown["percent"]) == ("SUCCESS", "10", "100%")
    assert shown["outcome"] == 'Result: {"steps":10}' and shown["cancelHidden"] is True


def test_server_text_is_never_markup(harness: Page) -> None:
    """Messages and errors are shown as text: markup from the server creates no element."""
    mount(harness, ("t1", {"token": "tok"}))
    evil = '<img src=x onerror="window.pwned=1">'
    send(harness, "snapshot", "t1", state="FAILURE", final=True,
         progress={"current": 1, "total": 2, "percent": 50.0, "message": evil},
         error={"type": "ValueError", "message": evil})
    shown = bar(harness)
    assert shown["message"] == evil and shown["outcome"] == f"ValueError: {evil}"
    assert harness.locator("task-progress img").count() == 0
    assert harness.evaluate("window.pwned") is None


def test_cancel_button_needs_a_cancellable_token(harness: Page) -> None:
    """No token or cancellable="false": no cancel button, even while running."""
    mount(harness, ("t1", {}), ("t2", {"token": "tok", "cancellable": "false"}),
          ("t3", {"token": "tok"}))
    for task_id in ("t1", "t2", "t3"):
        send(harness, "snapshot", task_id, state="PROGRESS")
    assert [bar(harness, t)["cancelHidden"] for t in ("t1", "t2", "t3")] == [True, True, False]


def test_accessible_parts(harness: Page) -> None:
    """The bar is labelled and described; messages are announced politely."""
    mount(harness, ("t1", {"token": "tok", "label": "Import orders"}))
    send(harness, "snapshot", "t1", state="PROGRESS")
    progress = harness.get_by_role("progressbar", name="Import orders")
    assert progress.count() == 1
    assert harness.locator(".taskpulse-message").get_attribute("aria-live") == "polite"
    assert harness.get_by_role("button", name="Cancel").is_visible()


def test_elements_of_one_task_share_a_subscription(harness: Page) -> None:
    """Two elements for one task subscribe once and unsubscribe when the last one goes."""
    mount(harness, ("t1", {"token": "tok"}), ("t1", {"token": "tok"}))
    sent = harness.evaluate("""async () => {
      const socket = FakeSocket.last();
      const elements = document.querySelectorAll("task-progress");
      elements[0].remove();
      const afterOne = socket.sent.length;
      elements[1].remove();
      return { frames: socket.sent, afterOne };
    }""")
    assert sent["frames"] == [
        {"type": "subscribe", "task_id": "t1", "token": "tok"},
        {"type": "unsubscribe", "task_id": "t1"},
    ]
    assert sent["afterOne"] == 1


def test_refused_token_is_shown(harness: Page) -> None:
    """A forbidden subscribe leaves the state UNKNOWN and shows why."""
    mount(harness, ("t1", {"token": "stale"}))
    harness.evaluate(SEND, {"type": "error", "code": "forbidden", "detail": "token expired",
                            "task_id": "t1"})
    element = harness.locator("task-progress")
    assert element.get_attribute("data-state") == "UNKNOWN"
    assert element.get_attribute("data-error") == "forbidden"
    assert bar(harness)["outcome"] == "token expired"


def test_server_rendered_element_subscribes_with_its_token(harness: Page) -> None:
    """A page rendered with the template tags upgrades the element and subscribes with its token."""
    html = Template(
        "{% load taskpulse %}<!doctype html><head>{% taskpulse_scripts %}</head>"
        "<body>{% task_progress 't1' cancellable=True label='Export' %}</body>"
    ).render(Context())

    def serve(route: Route) -> None:
        route.fulfill(status=200, content_type="text/html", body=html)

    harness.route("**/rendered/", serve)
    harness.goto("/rendered/")
    harness.wait_for_function("FakeSocket.all.length === 1")
    harness.evaluate("FakeSocket.last().serverOpen()")
    sent = harness.evaluate("FakeSocket.last().sent")
    assert [(f["type"], f["task_id"]) for f in sent] == [("subscribe", "t1")]
    verify_token(sent[0]["token"], "t1", Permission.CANCEL)
    send(harness, "snapshot", "t1", state="PROGRESS")
    assert bar(harness)["state"] == "PROGRESS" and bar(harness)["cancelHidden"] is False
    assert harness.get_by_role("progressbar", name="Export").count() == 1


def test_refused_cancel_is_shown_and_button_comes_back(harness: Page) -> None:
    """A cancel the server refuses shows why and leaves the button usable."""
    mount(harness, ("t1", {"token": "watch-only"}))
    send(harness, "snapshot", "t1", state="PROGRESS")
    button = harness.get_by_role("button", name="Cancel")
    button.click()
    harness.wait_for_function("FakeSocket.last().sent.some((f) => f.type === 'cancel')")
    assert button.is_disabled()
    harness.evaluate(SEND, {"type": "error", "code": "forbidden",
                            "detail": "token does not allow cancel", "task_id": "t1"})
    harness.locator('task-progress[data-error="forbidden"]').wait_for()
    assert bar(harness)["outcome"] == "token does not allow cancel"
    assert button.is_enabled()
    send(harness, "event", "t1", seq=2, state="PROGRESS")
    assert harness.locator("task-progress").get_attribute("data-error") is None
    assert bar(harness)["outcome"] == ""
