"""docs/API.md's examples work as written (run as Celery runs them, or on the real stack)."""

import json
import re
import time
import types
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from progress.publisher import publish, store
from progress.store.records import EventDraft
from progress.wire.states import State
from tests.conftest import Stack

API_DOC = Path(__file__).resolve().parent.parent / "docs" / "API.md"
FINAL_TIMEOUT = 30.0


def example(defining: str) -> types.ModuleType:
    """The docs/API.md python block containing `defining`, executed as a module."""
    blocks = re.findall(r"```python\n(.*?)```", API_DOC.read_text(), re.S)
    [code] = [block for block in blocks if defining in block]
    module = types.ModuleType(f"api_doc_{uuid.uuid4().hex}")
    exec(compile(code, str(API_DOC), "exec"), module.__dict__)
    return module


def run(task: Any, *args: Any) -> dict[str, Any]:
    """Run `task` as a worker would (signals included); its final event object."""
    task_id = f"docs-{uuid.uuid4()}"
    task.apply(args=args, task_id=task_id)
    return final_object(task_id)


def final_object(task_id: str) -> dict[str, Any]:
    snapshot = store().read(task_id).snapshot
    assert snapshot is not None, f"no record for {task_id}"
    obj: dict[str, Any] = json.loads(snapshot.json)
    store().delete(task_id)
    return obj


def test_reporter_example(redis_client: redis.Redis) -> None:
    """The first example records every row and its result."""
    final = run(example("def export").export, 3)
    assert final["state"] == "SUCCESS" and final["result"] == {"rows": 3}
    assert final["progress"] == {"current": 3, "total": 3, "percent": 100.0,
                                 "message": "row 3 of 3"}


def test_many_tasks_example(redis_client: redis.Redis) -> None:
    """publish_many makes each task watchable as PENDING, seq 1, in one round trip."""
    ids = [f"docs-{uuid.uuid4()}" for _ in range(5)]
    assert example("def announce").announce(ids) == [1] * 5
    for task_id in ids:
        final = final_object(task_id)
        assert final["state"] == "PENDING" and final["name"] == "imports.row"


def test_counting_example(redis_client: redis.Redis) -> None:
    """Indeterminate first, then counted with advance(), meta carried along."""
    final = run(example("def crawl").crawl, ["a", "b"])
    assert final["state"] == "SUCCESS" and final["result"] == 6
    assert final["progress"]["current"] == 6 and final["progress"]["total"] == 6
    assert final["meta"] == {"last": "b/page2"}


def test_context_manager_and_decorator_examples(redis_client: redis.Redis) -> None:
    """Both forms end with their last values published."""
    module = example("def resize")
    assert run(module.resize, 4)["progress"]["current"] == 4
    final = run(module.convert, 2)
    assert final["state"] == "SUCCESS" and final["progress"]["message"] == "file 2"


def test_helpers_and_threads_example(redis_client: redis.Redis) -> None:
    """Threads advancing by task id lose nothing; the helper in the task's thread is heard."""
    final = run(example("def copy_chunk").copy, 3, 100)
    assert final["state"] == "SUCCESS" and final["progress"]["current"] == 300
    assert final["progress"]["message"] == "verifying"


def test_cancellation_example(redis_client: redis.Redis) -> None:
    """A cancel requested while the task runs, before its first progress call, ends it
    REVOKED at that call."""
    task = example("def import_rows").import_rows
    task_id = f"docs-{uuid.uuid4()}"
    publish(EventDraft(task_id, State.STARTED, name=task.name))
    store().request_cancel(task_id)
    task.apply(args=(5,), task_id=task_id)
    final = final_object(task_id)
    assert final["state"] == "REVOKED" and final["error"]["type"] == "TaskCancelled"


@pytest.mark.integration
def test_group_example(stack: Stack) -> None:
    """The group example starts four counts that end as one SUCCESS."""
    from progress.tokens import verify_token

    module = example("start_group(")
    verify_token(module.token, module.group_id)
    deadline = time.monotonic() + FINAL_TIMEOUT
    while time.monotonic() < deadline:
        snapshot = store().read(module.group_id).snapshot
        if snapshot is not None and json.loads(snapshot.json)["final"]:
            break
        time.sleep(0.05)
    final = final_object(module.group_id)
    assert final["state"] == "SUCCESS" and final["name"] == "nightly.batch"
    assert final["result"] == {"total": 4, "succeeded": 4}
