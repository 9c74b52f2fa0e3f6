"""Hostile and unlucky HTTP requests (issue: safe by default): who may start a task,
per-client rate limits, deeply nested or NaN bodies, and an unreachable Redis."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.test import Client, override_settings

from progress.control import ratelimit
from progress.control.clients import client_address
from progress.control.startable import startable
from progress.store import keys, shards
from progress.store.connections import sync_client
from progress.tokens import WATCH_AND_CANCEL, issue_token
from project.demo.tasks import validate_count


def browser(address: str = "127.0.0.1") -> Client:
    """Django's test client as a visitor at `address` (CSRF is not enforced by it)."""
    return Client(HTTP_HOST="localhost", REMOTE_ADDR=address)


def start(client: Client, body: Any) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/api/tasks/", data=data, content_type="application/json")


@pytest.fixture
def fresh_limits(redis_client: redis.Redis) -> Iterator[None]:
    """No rate-limit counters left from another test."""
    pattern = f"{keys.rate_key('*', '*', 0).rsplit(':', 3)[0]}:*"
    for key in redis_client.scan_iter(match=pattern):
        redis_client.delete(key)
    yield
    for key in redis_client.scan_iter(match=pattern):
        redis_client.delete(key)


def test_a_host_task_needs_a_logged_in_user(fresh_limits: None) -> None:
    """A task registered with startable() and no `allow` is refused to anonymous visitors."""
    from celery import Celery

    name = f"host.export.{uuid.uuid4().hex[:6]}"
    app = Celery("host", set_as_current=False)

    @app.task(name=name)
    def export(rows: int) -> int:
        return rows

    startable()(export)
    answer = start(browser(), {"task": name, "args": [1]})
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "forbidden"


def test_demo_task_is_bounded_to_ten_minutes(fresh_limits: None) -> None:
    """steps x delay over 600 s is a 400 that says what to send; §7's ranges still hold."""
    answer = start(browser(), {"task": "demo.count", "kwargs": {"steps": 1000, "delay": 1}})
    assert answer.status_code == 400
    assert "at most 600" in answer.json()["error"]["detail"]
    validate_count(steps=600, delay=1)  # exactly the bound is fine


def test_starts_over_the_rate_get_429_with_retry_after(fresh_limits: None) -> None:
    """The third start in a minute from one address (limit 2/m) is a 429 with Retry-After
    and the protocol's JSON error; another address is not affected."""
    body = {"task": "demo.count", "kwargs": {"steps": 1, "delay": 0}}
    with override_settings(TASKPULSE_START_RATE="2/m"):
        client = browser("198.51.100.7")
        assert start(client, body).status_code == 202
        assert start(client, body).status_code == 202
        refused = start(client, body)
        assert refused.status_code == 429
        assert 1 <= int(refused["Retry-After"]) <= 60
        assert refused.json()["error"]["code"] == "rate_limited"
        assert start(browser("198.51.100.8"), body).status_code == 202


def test_cancels_over_the_rate_get_429(fresh_limits: None, store: Any) -> None:
    """TASKPULSE_CANCEL_RATE bounds cancels per address the same way."""
    from progress.publisher import publish
    from progress.store.records import EventDraft
    from progress.wire.states import State

    task_id = f"t-cancel-rate-{uuid.uuid4().hex[:6]}"
    publish(EventDraft(task_id, State.SUCCESS, result_json="1"))
    url = f"/api/tasks/{task_id}/cancel/?token={issue_token(task_id, WATCH_AND_CANCEL)}"
    with override_settings(TASKPULSE_CANCEL_RATE="1/h"):
        client = browser("198.51.100.9")
        assert client.post(url).status_code == 409  # counted, though already final
        refused = client.post(url)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    store.delete(task_id)


def test_a_bad_rate_setting_says_what_to_write() -> None:
    """A rate that is not N/s, N/m or N/h is refused with the accepted forms."""
    from django.core.exceptions import ImproperlyConfigured

    with override_settings(TASKPULSE_START_RATE="ten a minute"), \
            pytest.raises(ImproperlyConfigured, match="N/s, N/m or N/h"):
        ratelimit.rate_of(ratelimit.Action.START)


def test_forwarded_for_is_believed_only_from_a_trusted_proxy() -> None:
    """X-Forwarded-For names the client only when the peer is a configured proxy."""
    assert client_address("203.0.113.5", "10.9.9.9") == "203.0.113.5"
    with override_settings(TASKPULSE_TRUSTED_PROXIES=["127.0.0.1"]):
        assert client_address("127.0.0.1", "203.0.113.5, 127.0.0.1") == "203.0.113.5"
        assert client_address("203.0.113.6", "10.9.9.9") == "203.0.113.6"


@pytest.mark.parametrize("body", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"task": "demo.count", "kwargs": {"steps": NaN}}',
    b'{"task": "demo.count", "kwargs": {"delay": Infinity}}',
    b"\xff\xfe not utf-8",
])
def test_bad_bodies_are_400_with_the_json_error(body: bytes, fresh_limits: None) -> None:
    """Deeply nested JSON, NaN/Infinity and undecodable bodies are a 400, never a 500."""
    answer = start(browser(), body)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "bad_arguments"


def test_redis_outage_is_a_json_503() -> None:
    """With Redis unreachable the API answers the protocol's JSON error with 503."""
    down = ["redis://127.0.0.1:1/0"]  # nothing listens on port 1
    task_id = "t-outage"
    with override_settings(TASKPULSE_SHARDS=down, CHANNEL_LAYERS={}):
        answer = browser().get(f"/api/tasks/{task_id}/?token={issue_token(task_id)}")
    shards.forget_servers()
    sync_client()  # reconnect to the real server for later tests
    assert answer.status_code == 503
    assert answer["Content-Type"] == "application/json"
    assert answer.json()["error"]["code"] == "unavailable"
