"""The demo page in a real browser: start tasks from the form and watch the bars."""

import pytest

from tests.browser.conftest import DemoPage
from tests.conftest import Stack

pytestmark = pytest.mark.integration

FINISH_TIMEOUT_MS = 60_000


def bar_figures(demo: DemoPage, task_id: str) -> dict[str, str | None]:
    """What a person sees of one bar: its state, <progress> value/max and texts."""
    element = demo.page.locator(demo.bar(task_id))
    progress = element.locator("progress")
    return {
        "state": element.get_attribute("data-state"),
        "value": progress.get_attribute("value"),
        "max": progress.get_attribute("max"),
        "percent": element.locator(".taskpulse-percent").text_content(),
        "message": element.locator(".taskpulse-message").text_content(),
        "outcome": element.locator(".taskpulse-outcome").text_content(),
    }


def test_task_from_form_reaches_success(demo: DemoPage) -> None:
    """A task started from the form fills its bar to 100% and shows SUCCESS and the result."""
    task_id = demo.start(steps=5, delay=0.1)
    demo.wait_state(task_id, "SUCCESS")
    figures = bar_figures(demo, task_id)
    assert figures["value"] == "5" and figures["max"] == "5"
    assert figures["percent"] == "100%"
    assert figures["message"] == "step 5 of 5"
    assert figures["outcome"] == 'Result: {"steps":5}'
    assert demo.page.locator(f"{demo.bar(task_id)} .taskpulse-cancel").is_hidden()


def test_failing_task_shows_error(demo: DemoPage) -> None:
    """A task that raises shows FAILURE and the error's type and message."""
    task_id = demo.start(steps=5, delay=0.1, fail_at=3)
    demo.wait_state(task_id, "FAILURE")
    assert bar_figures(demo, task_id)["outcome"] == "ValueError: failed at step 3"


def test_cancel_from_keyboard_shows_revoked(demo: DemoPage) -> None:
    """The cancel button, pressed from the keyboard, stops a running task: REVOKED."""
    task_id = demo.start(steps=100, delay=0.2)
    demo.wait_state(task_id, "PROGRESS")
    button = demo.page.locator(f"{demo.bar(task_id)} .taskpulse-cancel")
    button.focus()
    demo.page.keyboard.press("Enter")
    demo.wait_state(task_id, "REVOKED")
    assert button.is_hidden()
    value = bar_figures(demo, task_id)["value"]
    assert value is not None and int(value) < 100


def test_bar_completes_across_server_restart(demo: DemoPage, stack: Stack) -> None:
    """Killing and restarting daphne mid-task: the page reconnects and the bar completes."""
    task_id = demo.start(steps=20, delay=0.25)
    demo.page.wait_for_function(
        "id => Number(document.querySelector(`task-progress[task-id='${id}'] progress`)"
        "?.getAttribute('value')) >= 2",
        arg=task_id,
    )
    stack.web.kill()
    demo.page.locator('#connection:not([data-status="open"])').wait_for()
    stack.restart_web()
    demo.wait_state(task_id, "SUCCESS", FINISH_TIMEOUT_MS)
    figures = bar_figures(demo, task_id)
    assert figures["value"] == "20" and figures["max"] == "20"
    assert len(demo.sockets) >= 2, "the page should have opened a new WebSocket"
    resumed = [f for f in demo.sent[-1] if f["type"] == "subscribe"]
    assert resumed and resumed[0]["task_id"] == task_id
    assert resumed[0]["since"] >= 2 and resumed[0]["epoch"], "it resumes from the last seq seen"
    demo.page.locator('#connection[data-status="open"]').wait_for()


def test_three_tasks_share_one_websocket(demo: DemoPage) -> None:
    """Three tasks at once on one page are watched over exactly one WebSocket."""
    task_ids = [demo.start(steps=4, delay=0.2) for _ in range(3)]
    for task_id in task_ids:
        demo.wait_state(task_id, "SUCCESS")
    order = demo.page.locator("#tasks > task-progress").evaluate_all(
        "els => els.map(e => e.getAttribute('task-id'))"
    )
    assert order == task_ids[::-1], "the newest task should be on top"
    assert [socket.url for socket in demo.sockets] == [demo.page.url.replace("http", "ws", 1)
                                                       + "ws/progress/"]

