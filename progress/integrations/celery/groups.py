"""Celery groups and chords watched as one task id (docs/API.md, "Groups").

`start_group()` writes the members (progress/store/groups.py) and the group's
PENDING record, then starts the Celery group (or chord) with that id as
Celery's group id; each member's events then update the group atomically.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from celery import chord, current_task, group
from celery.canvas import Signature

from progress.publisher import publish
from progress.store.groups import create_members
from progress.store.records import EventDraft
from progress.wire.states import State

DEFAULT_NAME = "group"


def start_group(signatures: Iterable[Signature[Any]], body: Signature[Any] | None = None,
                name: str = DEFAULT_NAME) -> str:
    """Start `signatures` as a Celery group (a chord when `body` is given); its watchable id.

    Watch the id like a task's: `issue_token(group_id)`, then subscribe.
    """
    group_id = str(uuid.uuid4())
    # Ids are chosen here so the members exist before any of them can run.
    header = [sig.clone(task_id=str(uuid.uuid4())) for sig in signatures]
    if not header:
        raise ValueError("start_group needs at least one signature")
    body_id = str(uuid.uuid4()) if body is not None else None
    create_members(group_id, [str(sig.id) for sig in header], body_id)
    publish(EventDraft(group_id, State.PENDING, name=name))
    if body is None:
        group(header).apply_async(task_id=group_id)
    else:
        # The chord's own task_id option becomes Celery's group id of the header.
        chord(header, body.clone(task_id=body_id), task_id=group_id).apply_async(task_id=body_id)
    return group_id


def member_group(task_id: str) -> str | None:
    """Celery's group id of `task_id` if it is the task running in this thread."""
    request = getattr(current_task, "request", None)
    if request is None or getattr(request, "id", None) != task_id:
        return None
    group_id = getattr(request, "group", None)
    return group_id if isinstance(group_id, str) and group_id else None
