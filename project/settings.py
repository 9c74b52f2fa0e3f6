"""Django settings, read from the environment with safe development defaults.

`DJANGO_DEBUG=0` is production mode: it refuses to start without a real
`DJANGO_SECRET_KEY` and with a wildcard `DJANGO_ALLOWED_HOSTS`.
"""

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from project.env import env_bool, env_int, env_list, env_number, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

DEV_SECRET_KEY = "taskpulse-insecure-development-key"  # development default only

DEBUG = env_bool("DJANGO_DEBUG", True)
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "" if not DEBUG else DEV_SECRET_KEY)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])

if not DEBUG:
    if not SECRET_KEY or SECRET_KEY == DEV_SECRET_KEY or len(SECRET_KEY) < 32:
        raise ImproperlyConfigured(
            "DJANGO_DEBUG=0 needs DJANGO_SECRET_KEY set to a random value of at least "
            "32 characters, e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))'"
        )
    if "*" in ALLOWED_HOSTS:
        raise ImproperlyConfigured(
            "DJANGO_DEBUG=0 refuses DJANGO_ALLOWED_HOSTS='*': list the host names that serve "
            "TaskPulse, comma-separated (they also guard WebSocket origins)"
        )

PORT = env_int("PORT", 8000)
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.staticfiles",
    "channels",
    "progress",
    "consumers",
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

# The pub/sub layer: one PUBLISH reaches every server process that has a
# subscriber for the task, and the publisher's Lua script can emit it in the
# same round trip that records the event (see progress/store.py).
CHANNEL_LAYER_PREFIX = env_str("TASKPULSE_PREFIX", "tp")
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "consumers.layer.ResyncingPubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": CHANNEL_LAYER_PREFIX},
    }
}

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", REDIS_URL)
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
# WorkerLostError (TaskPulse shows FAILURE then); keep it below PROGRESS_STALL_TIMEOUT.
CELERY_WORKER_LOST_WAIT = env_number("CELERY_WORKER_LOST_WAIT", 10.0)
CELERY_RESULT_BACKEND_ALWAYS_RETRY = True
CELERY_RESULT_BACKEND_MAX_RETRIES = 20
CELERY_RESULT_BACKEND_MAX_SLEEP_BETWEEN_RETRIES_MS = 2000

# TaskPulse's own settings (read through progress.conf, which holds defaults).
PROGRESS_KEY_PREFIX = CHANNEL_LAYER_PREFIX
PROGRESS_FINAL_TTL = env_int("PROGRESS_FINAL_TTL", 24 * 3600)
PROGRESS_HISTORY_LENGTH = env_int("PROGRESS_HISTORY_LENGTH", 200)
PROGRESS_TOKEN_MAX_AGE = env_int("PROGRESS_TOKEN_MAX_AGE", 24 * 3600)
PROGRESS_STALL_TIMEOUT = env_number("PROGRESS_STALL_TIMEOUT", 60.0)
PROGRESS_SEND_TRACEBACK = env_bool("PROGRESS_SEND_TRACEBACK", False)
PROGRESS_MIN_INTERVAL = env_number("PROGRESS_MIN_INTERVAL", 0.1)
PROGRESS_ASYNCRESULT = env_bool("PROGRESS_ASYNCRESULT", True)
PROGRESS_CANCEL_GRACE = env_number("PROGRESS_CANCEL_GRACE", 10.0)
PROGRESS_OUTBOX_MAX_EVENTS = env_int("PROGRESS_OUTBOX_MAX_EVENTS", 10_000)
# Per-connection limits (PROTOCOL.md §4 Errors; docs/GUARANTEES.md).
PROGRESS_MAX_SUBSCRIPTIONS = env_int("PROGRESS_MAX_SUBSCRIPTIONS", 100)
PROGRESS_RATE_LIMIT = env_number("PROGRESS_RATE_LIMIT", 50.0)
PROGRESS_RATE_BURST = env_number("PROGRESS_RATE_BURST", 100.0)
PROGRESS_FLOOD_STRIKES = env_int("PROGRESS_FLOOD_STRIKES", 50)
PROGRESS_MAX_FRAME_BYTES = env_int("PROGRESS_MAX_FRAME_BYTES", 64 * 1024)
PROGRESS_SEND_QUEUE_MAX_FRAMES = env_int("PROGRESS_SEND_QUEUE_MAX_FRAMES", 1000)
PROGRESS_SLOW_READER_TIMEOUT = env_number("PROGRESS_SLOW_READER_TIMEOUT", 30.0)
# WebSocket keepalive (project/serve.py): ping an idle client every INTERVAL s,
# drop it when no pong came TIMEOUT s later.
PROGRESS_PING_INTERVAL = env_int("PROGRESS_PING_INTERVAL", 20)
PROGRESS_PING_TIMEOUT = env_int("PROGRESS_PING_TIMEOUT", 30)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"daphne": {"level": "WARNING"}},
}
