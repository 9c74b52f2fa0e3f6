"""The WebSocket close codes the protocol sends (PROTOCOL.md §4; RFC 6455 §7.4.1).

Plain ints, not an IntEnum: autobahn refuses any close code whose type is not
exactly int.
"""

from __future__ import annotations

from typing import Final

NORMAL: Final = 1000
UNSUPPORTED_DATA: Final = 1003
POLICY_VIOLATION: Final = 1008  # flooding, an unread backlog, too many sockets from one client
MESSAGE_TOO_BIG: Final = 1009
INTERNAL_ERROR: Final = 1011
TRY_AGAIN_LATER: Final = 1013  # the server is at PROGRESS_MAX_SOCKETS

# What the server may send besides a normal closure.
ERRORS: Final = frozenset({UNSUPPORTED_DATA, POLICY_VIOLATION, MESSAGE_TOO_BIG, INTERNAL_ERROR,
                           TRY_AGAIN_LATER})
