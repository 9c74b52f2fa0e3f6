"""The server side: every use of daphne's, autobahn's, Twisted's, Channels' and
redis-py's internals on the web side, each behind a guard (compat.py).

- serve.py: the launcher (`python -m consumers.serve`): daphne with TaskPulse's
  settings; it decides every guard and installs what they allow (install.py).
- ws_protocol.py, daphne_server.py, direct_write.py, send_backlog.py: daphne's
  protocol and server, Twisted's transport and its write buffer, tuned.
- consumer_loop.py, socket_link.py: the one-inbox consumer loop and hiredis on the
  pub/sub socket, installed into the protocol side through consumers/tuning.py.
- compat.py, compat_checks.py: the guards and their start-up self-tests.

The protocol side (the rest of consumers/) never imports this package
(pyproject.toml, "The protocol side does not reach into the server side").
"""
