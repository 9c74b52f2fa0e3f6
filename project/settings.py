"""The example site's settings, read from the environment; safe unless told otherwise.

Production behaviour is the default: `DJANGO_SECRET_KEY` (32+ characters) is
required and `DJANGO_ALLOWED_HOSTS='*'` refused. `DJANGO_DEBUG=1` (set by
scripts/dev and the tests) is development mode: debug pages and a published
development key, never for a server others can reach.
"""

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from progress import conf
from progress.key_strength import MIN_KEY_LENGTH, NEW_KEY_COMMAND, is_weak
from progress.store.servers import DEFAULT_REDIS_URL
from project.env import (
    celery_redis,
    env_bool,
    env_int,
    env_list,
    env_number,
    env_redis_shards,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DEV_SECRET_KEY = "taskpulse-insecure-development-key"  # development (DJANGO_DEBUG=1) only

DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env_str("DJANGO_SECRET_KEY", DEV_SECRET_KEY if DEBUG else "")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])

if not DEBUG:
    # The rule TASKPULSE_TOKEN_KEY is held to as well (progress/key_strength.py).
    if not SECRET_KEY or SECRET_KEY == DEV_SECRET_KEY or is_weak(SECRET_KEY):
        raise ImproperlyConfigured(
            "TaskPulse runs in production mode unless DJANGO_DEBUG=1: set DJANGO_SECRET_KEY "
            f"to a random value of at least {MIN_KEY_LENGTH} characters (it signs task "
            f"tokens), e.g. {NEW_KEY_COMMAND}; or, on your own machine only, DJANGO_DEBUG=1"
        )
    if "*" in ALLOWED_HOSTS:
        raise ImproperlyConfigured(
            "production mode refuses DJANGO_ALLOWED_HOSTS='*': list the host names that serve "
            "TaskPulse, comma-separated (they also guard WebSocket origins)"
        )

# TaskPulse reads REDIS_URL, REDIS_SHARD_URLS or REDIS_SENTINELS +
# REDIS_SENTINEL_MASTER from the environment itself (progress/store/servers.py);
# the same rules give Celery its broker and result backend: the first server.
REDIS_SERVERS = env_redis_shards(DEFAULT_REDIS_URL)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.staticfiles",
    "channels",
    "progress",
    "consumers",
    "project.demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

# No relational data: task state lives in Redis.
DATABASES: dict[str, dict[str, str]] = {}

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]

USE_TZ = True
TIME_ZONE = "UTC"

SECURE_CONTENT_TYPE_NOSNIFF = True
CSRF_COOKIE_SECURE = not DEBUG
SESSION_COOKIE_SECURE = not DEBUG

# No CHANNEL_LAYERS: TaskPulse configures its own alias ("taskpulse") on its
# Redis servers (consumers/channel_layer.py), as it does in a host site.

# Celery is not sharded: broker and result backend default to the first shard
# (with Sentinel, Celery's own sentinel:// transport follows the fail-over).
_CELERY_REDIS_URL, _CELERY_REDIS_OPTIONS = celery_redis(REDIS_SERVERS[0])
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", _CELERY_REDIS_URL)
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", _CELERY_REDIS_URL)
if CELERY_BROKER_URL == _CELERY_REDIS_URL and _CELERY_REDIS_OPTIONS:
    CELERY_BROKER_TRANSPORT_OPTIONS = _CELERY_REDIS_OPTIONS
if CELERY_RESULT_BACKEND == _CELERY_REDIS_URL and _CELERY_REDIS_OPTIONS:
    CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = _CELERY_REDIS_OPTIONS
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_TASK_DEFAULT_QUEUE", "celery")
# Extra task modules a worker imports (the test suite adds tests.tasks).
CELERY_IMPORTS = env_list("CELERY_IMPORTS", [])
CELERY_TASK_TRACK_STARTED = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Ride out a Redis restart instead of failing a finished task because its
# result could not be stored: retry for up to ~30 s (docs/GUARANTEES.md).
# How long Celery waits before reporting a killed pool child's task as
# WorkerLostError (TaskPulse shows FAILURE then); keep it below TASKPULSE_STALL_TIMEOUT.
CELERY_WORKER_LOST_WAIT = env_number("CELERY_WORKER_LOST_WAIT", 10.0)
CELERY_RESULT_BACKEND_ALWAYS_RETRY = True
CELERY_RESULT_BACKEND_MAX_RETRIES = 20
CELERY_RESULT_BACKEND_MAX_SLEEP_BETWEEN_RETRIES_MS = 2000

# TaskPulse's own settings (read through progress.conf, which holds defaults).
TASKPULSE_KEY_PREFIX = env_str("TASKPULSE_PREFIX", "tp")
# Tokens: a separate status server shares this key with the host site (docs/INTEGRATION.md).
TASKPULSE_TOKEN_KEY = env_str("TASKPULSE_TOKEN_KEY", "") or None
TASKPULSE_ALLOWED_ORIGINS = env_list("TASKPULSE_ALLOWED_ORIGINS", ALLOWED_HOSTS)
TASKPULSE_FINAL_TTL = env_int("TASKPULSE_FINAL_TTL", 24 * 3600)
TASKPULSE_HISTORY_LENGTH = env_int("TASKPULSE_HISTORY_LENGTH", 200)
TASKPULSE_TOKEN_MAX_AGE = env_int("TASKPULSE_TOKEN_MAX_AGE", 24 * 3600)
TASKPULSE_STALL_TIMEOUT = env_number("TASKPULSE_STALL_TIMEOUT", 60.0)
TASKPULSE_SEND_TRACEBACK = env_bool("TASKPULSE_SEND_TRACEBACK", False)
if TASKPULSE_SEND_TRACEBACK and not DEBUG:
    raise ImproperlyConfigured(
        "TASKPULSE_SEND_TRACEBACK=1 sends server tracebacks to browsers: it is refused in "
        "production mode; unset it (or use DJANGO_DEBUG=1 on your own machine)")
TASKPULSE_MIN_INTERVAL = env_number("TASKPULSE_MIN_INTERVAL", 0.1)
TASKPULSE_ASYNCRESULT = env_bool("TASKPULSE_ASYNCRESULT", True)
TASKPULSE_CANCEL_GRACE = env_number("TASKPULSE_CANCEL_GRACE", 10.0)
TASKPULSE_OUTBOX_MAX_EVENTS = env_int("TASKPULSE_OUTBOX_MAX_EVENTS", 10_000)
# Per-connection limits (PROTOCOL.md §4 Errors; docs/GUARANTEES.md).
TASKPULSE_MAX_SUBSCRIPTIONS = env_int("TASKPULSE_MAX_SUBSCRIPTIONS", 100)
TASKPULSE_RATE_LIMIT = env_number("TASKPULSE_RATE_LIMIT", 50.0)
TASKPULSE_RATE_BURST = env_number("TASKPULSE_RATE_BURST", 100.0)
TASKPULSE_FLOOD_STRIKES = env_int("TASKPULSE_FLOOD_STRIKES", 50)
TASKPULSE_MAX_FRAME_BYTES = env_int("TASKPULSE_MAX_FRAME_BYTES", 64 * 1024)
TASKPULSE_SEND_QUEUE_MAX_FRAMES = env_int("TASKPULSE_SEND_QUEUE_MAX_FRAMES", 1000)
TASKPULSE_SEND_QUEUE_MAX_BYTES = env_int("TASKPULSE_SEND_QUEUE_MAX_BYTES",
                                        conf.DEFAULT_SEND_QUEUE_MAX_BYTES)
TASKPULSE_SEND_QUEUE_PROCESS_MAX_BYTES = env_int("TASKPULSE_SEND_QUEUE_PROCESS_MAX_BYTES",
                                                conf.DEFAULT_SEND_QUEUE_PROCESS_MAX_BYTES)
TASKPULSE_SLOW_READER_TIMEOUT = env_number("TASKPULSE_SLOW_READER_TIMEOUT", 30.0)
# Per-client limits (PROTOCOL.md §6): starts and cancels per address ("N/s", "N/m",
# "N/h"; "0" = unlimited), and which reverse proxies' X-Forwarded-For to believe.
TASKPULSE_START_RATE = env_str("TASKPULSE_START_RATE", conf.DEFAULT_START_RATE)
TASKPULSE_CANCEL_RATE = env_str("TASKPULSE_CANCEL_RATE", conf.DEFAULT_CANCEL_RATE)
TASKPULSE_TRUSTED_PROXIES = env_list("TASKPULSE_TRUSTED_PROXIES", [])
TASKPULSE_IPV6_PREFIX = env_int("TASKPULSE_IPV6_PREFIX", conf.DEFAULT_IPV6_PREFIX)
TASKPULSE_IDLE_SOCKET_TIMEOUT = env_number("TASKPULSE_IDLE_SOCKET_TIMEOUT",
                                          conf.DEFAULT_IDLE_SOCKET_TIMEOUT)
# Client frames read but not yet handled: set only when the environment says,
# else progress/conf.py's defaults (twice the rate burst; 1 MiB) apply.
for _name in ("TASKPULSE_INBOX_MAX_FRAMES", "TASKPULSE_INBOX_MAX_BYTES"):
    if _name in os.environ:
        globals()[_name] = env_int(_name, 0)
TASKPULSE_MESSAGE_MAX_CHARS = env_int("TASKPULSE_MESSAGE_MAX_CHARS", conf.DEFAULT_MESSAGE_MAX_CHARS)
TASKPULSE_MAX_SOCKETS = env_int("TASKPULSE_MAX_SOCKETS", conf.DEFAULT_MAX_SOCKETS)
TASKPULSE_MAX_SOCKETS_PER_CLIENT = env_int("TASKPULSE_MAX_SOCKETS_PER_CLIENT",
                                          conf.DEFAULT_MAX_SOCKETS_PER_CLIENT)
# WebSocket keepalive (consumers/serve.py): ping an idle client every INTERVAL s,
# drop it when no pong came TIMEOUT s later.
TASKPULSE_PING_INTERVAL = env_int("TASKPULSE_PING_INTERVAL", 20)
TASKPULSE_PING_TIMEOUT = env_int("TASKPULSE_PING_TIMEOUT", 30)
# A comment line on an idle Server-Sent Events stream every N s (progress/web/sse.py).
TASKPULSE_SSE_KEEPALIVE = env_number("TASKPULSE_SSE_KEEPALIVE", conf.DEFAULT_SSE_KEEPALIVE)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"daphne": {"level": "WARNING"}},
}

# Task systems beside Celery (Django-Q2, Django's tasks framework): their apps,
# DATABASES (SQLite), Q_CLUSTER, TASKS and TASKPULSE_TASK_QUEUES, for each one
# installed (TASKPULSE_SYSTEMS narrows it): project/demo/systems.py.
from project.demo.systems import settings_for  # noqa: E402

globals().update(settings_for(INSTALLED_APPS, REDIS_SERVERS[0], TASKPULSE_KEY_PREFIX))
