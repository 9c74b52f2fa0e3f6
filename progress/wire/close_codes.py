"""The WebSocket close codes the protocol sends (PROTOCOL.md §4, revision 2).

Revision 2 uses application codes (4000-4999, RFC 6455 §7.4.2) only. Every
server TaskPulse supports lets an application send those through its public
API (daphne/autobahn's `sendClose` accepts 1000 and 3000-4999 only; uvicorn
any), so what a client sees never depends on reaching past a server's API. And
each code has one meaning, so a client can tell "stop" from "come back later".

Revision 1 sent 1008/1009/1013; clients keep accepting those (`LEGACY`).

Plain ints, not an IntEnum: autobahn refuses any close code whose type is not
exactly int.
"""

from __future__ import annotations

from typing import Final

NORMAL: Final = 1000

# Final: the client must not reconnect on its own (a page bug or abuse).
FLOODING: Final = 4008  # kept sending after rate_limited, or past the unhandled-frame bound
MESSAGE_TOO_BIG: Final = 4009  # a frame over the size limit
# Not final: the client reconnects after a pause and resumes with since/epoch.
SLOW_READER: Final = 4010  # left frames unread past the slow-reader bound
IDLE: Final = 4011  # open with no subscription for TASKPULSE_IDLE_SOCKET_TIMEOUT
TRY_AGAIN_LATER: Final = 4013  # the server process is at TASKPULSE_MAX_SOCKETS
TOO_MANY_SOCKETS: Final = 4029  # this client has TASKPULSE_MAX_SOCKETS_PER_CLIENT open

# What the server may send besides a normal closure.
ERRORS: Final = frozenset({FLOODING, MESSAGE_TOO_BIG, SLOW_READER, IDLE, TRY_AGAIN_LATER,
                           TOO_MANY_SOCKETS})

# Revision 1's codes, with the revision-2 code a client treats each as.
LEGACY: Final = {1003: MESSAGE_TOO_BIG, 1008: FLOODING, 1009: MESSAGE_TOO_BIG,
                 1013: TRY_AGAIN_LATER}
