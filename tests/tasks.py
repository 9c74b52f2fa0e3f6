"""Tasks only the test suite's worker loads (CELERY_IMPORTS=tests.tasks)."""

import datetime
import os
import time
from typing import Any

from celery import shared_task

from progress.publisher import track


@shared_task(bind=True, name="tests.returns_datetime")
def returns_datetime(self: Any) -> datetime.datetime:
    track(self).update(1, total=1, message="done")
    return datetime.datetime(2026, 11, 21, 12, 0, tzinfo=datetime.UTC)


@shared_task(bind=True, name="tests.returns_huge")
def returns_huge(self: Any) -> str:
    return "x" * 200_000


@shared_task(bind=True, name="tests.slow_steps")
def slow_steps(self: Any, steps: int = 50, delay: float = 0.1) -> dict[str, Any]:
    """Reports progress every step; a cancel stops it at the next update."""
    progress = track(self)
    for i in range(1, steps + 1):
        time.sleep(delay)
        progress.update(i, total=steps)
    return {"steps": steps}


@shared_task(bind=True, name="tests.blocks")
def blocks(self: Any, seconds: float = 60.0) -> str:
    """Reports one step (with its process id), then blocks without progress calls."""
    track(self).update(1, total=2, message="blocking", meta={"pid": os.getpid()})
    time.sleep(seconds)
    return "done"


@shared_task(bind=True, name="tests.chatty")
def chatty(self: Any, steps: int = 2000, pad: int = 2000) -> dict[str, Any]:
    """Reports progress as fast as it can, with a padded message (fills slow readers)."""
    progress = track(self)
    padding = "x" * pad
    for i in range(1, steps + 1):
        progress.update(i, total=steps, message=padding)
    return {"steps": steps}


# -- issue 4: publisher, groups, AsyncResult interop -----------------------------


@shared_task(bind=True, name="tests.hot_loop")
def hot_loop(self: Any, calls: int = 200_000) -> dict[str, int]:
    """Calls update() in a tight loop: the throttle must coalesce it."""
    progress = track(self)
    for i in range(1, calls + 1):
        progress.update(i, total=calls, message=f"call {i}")
    return {"calls": calls}


@shared_task(bind=True, name="tests.threaded")
def threaded(self: Any, threads: int = 4, per_thread: int = 5000) -> dict[str, int]:
    """Worker threads report through a helper that only knows the task id."""
    import threading

    task_id = self.request.id
    track(self).update(0, total=threads * per_thread)

    def helper() -> None:
        for _ in range(per_thread):
            track(task_id).advance()

    workers = [threading.Thread(target=helper) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return {"done": threads * per_thread}


@shared_task(bind=True, name="tests.fails_after")
def fails_after(self: Any, steps: int = 3, delay: float = 0.05) -> None:
    """Reports `steps` steps, then raises."""
    progress = track(self)
    for i in range(1, steps + 1):
        time.sleep(delay)
        progress.update(i, total=steps + 1)
    raise ValueError(f"gave up after {steps}")


@shared_task(bind=True, name="tests.total")
def total(self: Any, results: list[dict[str, int]]) -> dict[str, int]:
    """A chord body: adds up the members' `steps`."""
    return {"steps": sum(r["steps"] for r in results)}


# -- issue 10: Celery's own update_state, streamed --------------------------------


@shared_task(bind=True, name="tests.tutorial")
def tutorial(self: Any, steps: int = 10, delay: float = 0.05) -> dict[str, int]:
    """The classic Celery progress recipe, unchanged: update_state(PROGRESS) only."""
    for i in range(1, steps + 1):
        time.sleep(delay)
        self.update_state(state="PROGRESS", meta={"current": i, "total": steps})
    return {"steps": steps}


@shared_task(bind=True, name="tests.tutorial_described")
def tutorial_described(self: Any, delay: float = 0.15) -> str:
    """update_state with `description`, `message`, `percent` and keys of its own."""
    self.update_state(state="PROGRESS",
                      meta={"current": 1, "total": 4, "description": "copying", "phase": "copy"})
    time.sleep(delay)
    self.update_state(state="PROGRESS",
                      meta={"current": 2, "total": 4, "message": "checking", "description": "x"})
    time.sleep(delay)
    self.update_state(state="PROGRESS", meta={"percent": 75})
    time.sleep(delay)
    return "ok"


@shared_task(bind=True, name="tests.custom_state")
def custom_state(self: Any, delay: float = 0.15) -> str:
    """A state of the task's own between two PROGRESS updates."""
    self.update_state(state="PROGRESS", meta={"current": 1, "total": 3})
    time.sleep(delay)
    self.update_state(state="UPLOADING", meta={"current": 2, "total": 3, "file": "a.csv"})
    time.sleep(delay)
    self.update_state(state="PROGRESS", meta={"current": 3, "total": 3})
    time.sleep(delay)
    return "ok"


@shared_task(bind=True, name="tests.declares_failure")
def declares_failure(self: Any, exc_message: Any = None) -> None:
    """Celery's documented way to set a task's own outcome: update_state, then Ignore."""
    from celery import states
    from celery.exceptions import Ignore

    exc_message = ["bad input"] if exc_message is None else exc_message
    self.update_state(state=states.FAILURE,
                      meta={"exc_type": "ValueError", "exc_message": exc_message})
    raise Ignore()


@shared_task(bind=True, name="tests.surrogates")
def surrogates(self: Any, fail: bool = False) -> str:
    """Text no UTF-8 encoder takes (a lone surrogate) in a message, an error and a result."""
    track(self, min_interval=0).update(1, total=1, message="half \ud800 a character")
    if fail:
        raise ValueError("bad \udc80 input")
    return "done \ud800"
