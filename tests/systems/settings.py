"""The example site's settings with its task systems enabled as
project/demo/systems.py enables them (the lines project/settings.py applies),
plus this test app. The processes the tests start (daphne, qcluster, db_worker,
migrate) run with DJANGO_SETTINGS_MODULE=tests.systems.settings; the database
path (TASKPULSE_DEMO_DB), key prefix and systems come from their environment."""

import os

from project.demo.systems import settings_for
from project.settings import *  # noqa: F403
from project.settings import INSTALLED_APPS, REDIS_SERVERS, TASKPULSE_KEY_PREFIX

globals().update(settings_for(INSTALLED_APPS, REDIS_SERVERS[0], TASKPULSE_KEY_PREFIX))
INSTALLED_APPS = [*globals()["INSTALLED_APPS"], "tests.systems"]

if os.environ.get("TASKPULSE_TEST_Q_ORM"):
    # Django-Q2's ORM broker, which presents a failed task again: retries.
    Q_CLUSTER = {key: value for key, value in globals()["Q_CLUSTER"].items() if key != "redis"}
    Q_CLUSTER.update({"orm": "default", "retry": 2, "timeout": 1, "max_attempts": 2,
                      "poll": 0.1})

if os.environ.get("TASKPULSE_TEST_Q_REDIS"):
    # Django-Q2's broker on a Redis of its own (tests/test_start_broker.py: one that is down).
    Q_CLUSTER = {**globals()["Q_CLUSTER"], "redis": os.environ["TASKPULSE_TEST_Q_REDIS"]}
