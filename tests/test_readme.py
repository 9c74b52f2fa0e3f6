"""The README's "use it in your own task" example works as written."""

import json
import re
import types
import uuid
from pathlib import Path

import redis

from progress.publisher import store
from progress.tokens import verify_token

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(section: str) -> list[str]:
    text = README.read_text()
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, re.S)


def test_readme_task_example_reports_progress(redis_client: redis.Redis) -> None:
    """The example task, run as Celery runs it, records progress and its result."""
    task_code, start_code = python_blocks("Use it in your own task")
    module = types.ModuleType("readme_example")
    exec(compile(task_code, "README.md", "exec"), module.__dict__)
    task_id = f"readme-{uuid.uuid4()}"
    module.export.apply(args=(3,), task_id=task_id)
    snapshot = store().read(task_id).snapshot
    assert snapshot is not None
    final = json.loads(snapshot.json)
    assert final["state"] == "SUCCESS" and final["result"] == {"rows": 3}
    assert final["progress"]["message"] == "row 3 of 3" and final["progress"]["percent"] == 100.0
    store().delete(task_id)

    class FakeResult:
        id = task_id

    namespace = {"export": types.SimpleNamespace(delay=lambda rows: FakeResult())}
    exec(compile(start_code, "README.md", "exec"), namespace)
    assert verify_token(str(namespace["token"]), task_id).task_id == task_id
