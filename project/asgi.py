"""ASGI entry point: HTTP goes to Django, WebSockets to the progress consumers."""

import os

from channels.routing import ProtocolTypeRouter
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

# Django must be set up before the consumers (and their models/settings) import.
django_asgi_app = get_asgi_application()

from consumers.routing import websocket_application  # noqa: E402
from consumers.server.install import install_tunings  # noqa: E402

# The consumer loop and pub/sub reader tunings (docs/BENCHMARKS.md, "The tuned
# launcher against stock servers"), each only where its guard passes: under stock
# daphne and uvicorn too, not only under `python -m consumers.serve`, which
# installs them itself. What clients see is the same either way.
install_tunings()

application = ProtocolTypeRouter(
    {
        # The JS client and element ship with the app: serve them from
        # static/ directly, so no collectstatic step or extra server is needed.
        "http": ASGIStaticFilesHandler(django_asgi_app),
        "websocket": websocket_application(),
    }
)
