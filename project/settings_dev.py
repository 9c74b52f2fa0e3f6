"""The example site in development mode (DJANGO_DEBUG=1), for tools that load
settings without an environment: mypy's Django plugin (pyproject.toml)."""

import os

os.environ.setdefault("DJANGO_DEBUG", "1")

from project.settings import *  # noqa: F403
