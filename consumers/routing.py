"""WebSocket routes: the multiplexed endpoint and the one-task convenience endpoint."""

from django.urls import path

from consumers.progress import ProgressConsumer

websocket_urlpatterns = [
    path("ws/progress/", ProgressConsumer.as_asgi()),
    path("ws/progress/<str:task_id>/", ProgressConsumer.as_asgi()),
]
