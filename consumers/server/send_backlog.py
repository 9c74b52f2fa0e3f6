"""How many bytes a connection has written that its client has not taken yet.

consumers/outbox.py reads this (the ASGI scope extension BACKLOG_EXTENSION)
to queue and coalesce frames for a client that stops reading, so a slow
reader costs bounded memory (docs/GUARANTEES.md rule 9). Twisted keeps no
public count of it, so there are two ways to get it:

- `unwritten_bytes`: Twisted's own write buffer (`dataBuffer`, `offset`,
  `_tempDataLen` of its file-descriptor transports), read directly. Under
  TLS the WebSocket's transport is Twisted's TLS wrapper, which hands
  ciphertext to the TCP transport below it: the count is the TLS layer's
  own pending plaintext plus that transport's buffer. Exact, in bytes; the
  outbox queues past HIGH_WATER (256 KiB). Guarded (consumers/server/compat.py
  SEND_BACKLOG): it reads Twisted internals.
- `PausedFlag`, the public fallback: a push producer registered on the
  transport (Twisted's IConsumer API, TLS included). Twisted pauses it when
  its buffer passes the transport's `bufferSize` (64 KiB) and resumes it once
  the buffer is empty; while paused the backlog reads as over HIGH_WATER.
"""

from __future__ import annotations

from typing import Any

from twisted.protocols.tls import TLSMemoryBIOProtocol

from consumers.outbox import HIGH_WATER


def unwritten_bytes(transport: Any) -> int:
    """Bytes written to a Twisted transport that its socket has not taken yet
    (TLS: the plaintext the TLS layer still holds plus the ciphertext below it)."""
    if transport is None:
        return 0
    if isinstance(transport, TLSMemoryBIOProtocol):
        pending = sum(map(len, transport._appSendBuffer))
        return pending + unwritten_bytes(transport.transport)
    return int(len(transport.dataBuffer) - transport.offset + transport._tempDataLen)


def readable(transport: Any) -> bool:
    """Whether `unwritten_bytes` can read this transport (else: a PausedFlag)."""
    if isinstance(transport, TLSMemoryBIOProtocol):
        return hasattr(transport, "_appSendBuffer") and readable(transport.transport)
    return all(hasattr(transport, name) for name in ("dataBuffer", "offset", "_tempDataLen"))


class PausedFlag:
    """A push producer that only remembers whether Twisted asked it to pause.

    Registered on a WebSocket's transport (after daphne's HTTP channel, which
    is still registered from the handshake, is unregistered: a transport has
    one producer); `backlog()` is then over HIGH_WATER while the transport's
    buffer is over its `bufferSize`, 0 otherwise.
    """

    __slots__ = ("paused",)

    def __init__(self) -> None:
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.paused = False

    def backlog(self) -> int:
        return HIGH_WATER + 1 if self.paused else 0

    @classmethod
    def watch(cls, transport: Any) -> PausedFlag:
        flag = cls()
        transport.unregisterProducer()
        transport.registerProducer(flag, True)
        return flag
