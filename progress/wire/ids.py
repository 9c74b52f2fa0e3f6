"""Task id validation (PROTOCOL.md §1), shared by the HTTP API and the consumers."""

import re

TASK_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,80}")


def is_valid_task_id(value: object) -> bool:
    return isinstance(value, str) and TASK_ID_RE.fullmatch(value) is not None
