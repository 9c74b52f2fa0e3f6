"""Broker independence: the happy path with Celery's broker on RabbitMQ (AMQP).

Redis still holds TaskPulse's records and the result backend; only the task
messages travel through RabbitMQ. Skipped when no RabbitMQ answers.
"""

import uuid
from collections.abc import Iterator

import pytest
from celery import Celery
from kombu import Queue

from progress.tokens import issue_token
from tests import processes
from tests.client import Ws, connect
from tests.conftest import SESSION_PREFIX, Stack
from tests.processes import AMQP_URL, amqp_reachable

pytestmark = pytest.mark.integration

QUEUE = f"{SESSION_PREFIX}-amqp"




@pytest.fixture(scope="module")
def amqp_app(stack: Stack) -> Iterator[Celery]:
    """A worker consuming from RabbitMQ, and a client app that sends through it."""
    if not amqp_reachable(AMQP_URL):
        pytest.skip(f"RabbitMQ is not reachable at {AMQP_URL} (set TEST_AMQP_URL to test AMQP)")
    env = processes.stack_env(SESSION_PREFIX, QUEUE, {"CELERY_BROKER_URL": AMQP_URL})
    worker = processes.start_worker(env, f"{SESSION_PREFIX}-amqp", concurrency=1)
    # Not the current app: the rest of the session keeps sending through the project's.
    app = Celery("taskpulse-amqp-client", broker=AMQP_URL, set_as_current=False)
    app.conf.task_default_queue = QUEUE
    try:
        yield app
    finally:
        worker.stop()
        with app.connection_for_write() as conn:
            Queue(QUEUE).bind(conn.default_channel).delete()
        app.close()


async def test_happy_path_over_rabbitmq(stack: Stack, amqp_app: Celery) -> None:
    """A task sent through RabbitMQ streams PENDING..PROGRESS..SUCCESS like over Redis."""
    task_id = str(uuid.uuid4())
    amqp_app.send_task("demo.count", kwargs={"steps": 4, "delay": 0.15}, task_id=task_id)
    async with connect(stack.ws) as conn:
        ws = Ws(conn)
        await ws.subscribe(task_id, issue_token(task_id))
        frames = await ws.frames_until_final(task_id)
    assert frames[0]["type"] == "snapshot"
    states = [f["state"] for f in frames]
    assert "PROGRESS" in states and states[-1] == "SUCCESS"
    assert frames[-1]["result"] == {"steps": 4}
    assert frames[-1]["progress"]["message"] == "step 4 of 4"
    seqs = [f["seq"] for f in frames]
    assert seqs == list(range(seqs[0], seqs[-1] + 1))
