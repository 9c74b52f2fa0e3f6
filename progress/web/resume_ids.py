"""The `id:` of a Server-Sent Events message: where every task on the stream stands.

An opaque, URL-safe, compact text (base64url of compact JSON, no padding) that
the browser sends back as `Last-Event-ID` when it reconnects: one entry per
task, in the stream's order, `[epoch, seq, final]`. Anything unreadable, or
with another number of tasks, is ignored: the stream starts afresh.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

# A position list longer than this is no id this server wrote (header-sized).
MAX_ID_CHARS = 16 * 1024


@dataclass(frozen=True, slots=True)
class Position:
    epoch: str | None  # None: the client holds the task's UNKNOWN snapshot
    seq: int
    final: bool


START = Position(None, 0, False)  # nothing sent yet


def encode(positions: list[Position]) -> str:
    entries = [[p.epoch, p.seq, 1 if p.final else 0] for p in positions]
    text = json.dumps(entries, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(text).rstrip(b"=").decode("ascii")


def decode(text: str | None, tasks: int) -> list[Position] | None:
    """The positions `text` holds for a stream of `tasks` tasks; None when unreadable."""
    if not text or len(text) > MAX_ID_CHARS:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        entries = json.loads(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if not isinstance(entries, list) or len(entries) != tasks:
        return None
    positions = []
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 3):
            return None
        epoch, seq, final = entry
        if not (epoch is None or isinstance(epoch, str)) or type(seq) is not int or seq < 0:
            return None
        if final not in (0, 1) or type(final) is not int:
            return None
        positions.append(Position(epoch, seq, bool(final)))
    return positions
