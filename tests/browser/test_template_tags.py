"""The `{% load taskpulse %}` tags that put a progress bar in a server-rendered page."""

import re
import uuid

import pytest
from celery.result import AsyncResult
from django.template import Context, Template

from progress.tokens import Permission, TokenError, verify_token


def render(source: str, **context: object) -> str:
    return Template("{% load taskpulse %}" + source).render(Context(context))


def token_in(html: str) -> str:
    found = re.search(r'token="([^"]+)"', html)
    assert found, html
    return found.group(1)


def test_task_progress_renders_element_with_fresh_token() -> None:
    """`{% task_progress task_id %}` renders the element with a token to watch and cancel."""
    html = render("{% task_progress task_id %}", task_id="abc-123")
    assert html.startswith('<task-progress task-id="abc-123" token="')
    assert "cancellable" not in html
    token = token_in(html)
    assert verify_token(token, "abc-123", Permission.CANCEL).task_id == "abc-123"


def test_task_progress_watch_only() -> None:
    """`cancellable=False` renders no cancel button and a token that cannot cancel."""
    html = render('{% task_progress "abc" cancellable=False label="Export" %}')
    assert 'cancellable="false"' in html and 'label="Export"' in html
    verify_token(token_in(html), "abc", Permission.WATCH)
    with pytest.raises(TokenError):
        verify_token(token_in(html), "abc", Permission.CANCEL)


def test_task_progress_rejects_bad_id() -> None:
    """A value that is not a task id is a developer error that says what to pass."""
    with pytest.raises(ValueError, match="task id"):
        render("{% task_progress task_id %}", task_id=None)


def test_taskpulse_scripts_includes_module_and_css() -> None:
    """`{% taskpulse_scripts %}` emits the stylesheet and the module script."""
    html = render("{% taskpulse_scripts %}")
    assert '<link rel="stylesheet" href="/static/taskpulse/taskpulse.css">' in html
    assert '<script type="module" src="/static/taskpulse/task-progress.js"></script>' in html


def test_label_is_escaped() -> None:
    """Labels from the view are HTML-escaped."""
    html = render("{% task_progress 'abc' label=label %}", label='"><script>')
    assert "<script>" not in html and "&quot;&gt;&lt;script&gt;" in html


def test_task_progress_accepts_async_result_and_uuid() -> None:
    """A Celery AsyncResult or a UUID works as the task argument."""
    task_id = uuid.uuid4()
    assert f'task-id="{task_id}"' in render("{% task_progress t %}", t=task_id)
    assert f'task-id="{task_id}"' in render("{% task_progress t %}", t=AsyncResult(str(task_id)))
