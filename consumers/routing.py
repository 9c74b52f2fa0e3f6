"""WebSocket routes: the multiplexed endpoint and the one-task convenience endpoint.

A host's asgi.py mounts them with `websocket_application()` (origin check
included) or its own router over `websocket_urlpatterns`.
"""

from typing import Any

from channels.routing import URLRouter
from django.urls import path

from consumers.channel_layer import check_layer_config, ensure_alias
from consumers.origin import AllowedOriginValidator
from consumers.progress import ProgressConsumer
from consumers.sockets import SocketLimits

websocket_urlpatterns = [
    path("ws/progress/", ProgressConsumer.as_asgi()),
    path("ws/progress/<str:task_id>/", ProgressConsumer.as_asgi()),
]


def websocket_application() -> Any:
    """The ASGI app for the "websocket" key of a ProtocolTypeRouter: the routes above
    behind the browser-origin check (TASKPULSE_ALLOWED_ORIGINS, else ALLOWED_HOSTS)
    and the socket caps (consumers/sockets.py). A TaskPulse channel layer configured
    with options it cannot honour is refused here, at start-up."""
    check_layer_config()
    # Registered now: the Server-Sent Events endpoint (progress/web/sse.py) shares it.
    ensure_alias()
    return SocketLimits(AllowedOriginValidator(URLRouter(websocket_urlpatterns)))
