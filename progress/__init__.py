"""TaskPulse's Django app: the Redis record store, the publisher API for task
authors, Celery signal hooks, tokens and the HTTP API."""
