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


def test_task_progress_renders_a_watch_only_element_by_default() -> None:
    """`{% task_progress task_id %}` renders the element with a token that watches but
    cannot cancel, and no cancel button: a leaked page or link cannot stop the task."""
    html = render("{% task_progress task_id %}", task_id="abc-123")
    assert html.startswith('<task-progress task-id="abc-123" token="')
    assert 'cancellable="false"' in html
    token = token_in(html)
    assert verify_token(token, "abc-123", Permission.WATCH).task_id == "abc-123"
    with pytest.raises(TokenError, match="cancel"):
        verify_token(token, "abc-123", Permission.CANCEL)


def test_task_progress_cancellable_when_the_page_asks() -> None:
    """`cancellable=True` shows the cancel button, with a token that may cancel."""
    html = render('{% task_progress "abc" cancellable=True label="Export" %}')
    assert "cancellable" not in html and 'label="Export"' in html
    assert verify_token(token_in(html), "abc", Permission.CANCEL).task_id == "abc"


def test_task_progress_says_why_until_the_element_runs() -> None:
    """The rendered tag carries a hint naming the script to check, replaced by the bar
    when the script runs; `queued_hint_after` becomes the element's attribute."""
    html = render("{% task_progress 'abc' queued_hint_after=60 %}")
    assert 'queued-hint-after="60"' in html
    assert "If this text stays, the progress bar's script did not run" in html
    assert "/static/taskpulse/task-progress.js" in html and "{% taskpulse_scripts %}" in html
    assert "<noscript>" in html


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
