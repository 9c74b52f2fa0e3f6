"""Starting and cancelling tasks on behalf of browsers: which tasks may be
started (startable.py) and cancel (cancel.py), for the HTTP API and the
WebSocket `cancel` frame alike."""
