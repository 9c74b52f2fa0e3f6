"""The launcher's command: `python -m consumers.serve mysite.asgi:application [daphne options]`.

The launcher itself, and every tuning it applies to daphne, autobahn, Twisted,
Channels and redis-py, live in consumers/server/ (serve.py there).
"""

from consumers.server.serve import main

if __name__ == "__main__":
    main()
