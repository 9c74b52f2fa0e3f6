"""Redis commands packed in RESP by hand, for the two places that write a Redis
socket themselves: the publisher's script runner (progress/store/script_runner.py)
and the launcher's pub/sub reader (consumers/server/socket_link.py).

redis-py's own `pack_command` costs a fifth of a published call; these join
pre-formatted length headers instead.
"""

from __future__ import annotations

from collections.abc import Iterable

CRLF = b"\r\n"
# RESP length headers of the usual argument sizes, formatted once.
_LENGTHS = [b"$%d\r\n" % size for size in range(8192)]
_MAX_LISTED_LENGTH = len(_LENGTHS) - 1


def pack_bulk(args: Iterable[bytes]) -> bytes:
    """Arguments as RESP bulk strings, one after the other (no array header)."""
    out: list[bytes] = []
    for data in args:
        size = len(data)
        out += (_LENGTHS[size] if size <= _MAX_LISTED_LENGTH else b"$%d\r\n" % size,
                data, CRLF)
    return b"".join(out)


def array_header(count: int) -> bytes:
    """The header of a command of `count` arguments."""
    return b"*%d\r\n" % count


def pack(*args: bytes) -> bytes:
    """A command in RESP."""
    return array_header(len(args)) + pack_bulk(args)
