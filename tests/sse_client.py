"""A streaming Server-Sent Events client for the tests: raw HTTP/1.1 over asyncio
streams (chunked bodies decoded), messages parsed as a browser's EventSource does."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

READ_TIMEOUT = 15.0
EVENTS_PATH = "/api/events/"  # the example site's include of progress.urls


@dataclass
class Message:
    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class SseResponse:
    status: int
    headers: dict[str, str]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    chunked: bool
    retry: int | None = None
    comments: list[str] = field(default_factory=list)
    last_id: str | None = None
    _buffer: bytes = b""
    _eof: bool = False

    async def _more(self, timeout: float) -> bool:
        """Read more of the body into the buffer; False at its end."""
        if self._eof:
            return False
        if not self.chunked:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
        else:
            size_line = await asyncio.wait_for(self.reader.readline(), timeout)
            if not size_line:
                data = b""
            else:
                size = int(size_line.strip() or b"0", 16)
                data = await asyncio.wait_for(self.reader.readexactly(size + 2), timeout)
                data = data[:-2]
        if not data:
            self._eof = True
            return False
        self._buffer += data
        return True

    async def body(self, timeout: float = READ_TIMEOUT) -> bytes:
        while await self._more(timeout):
            pass
        return self._buffer

    async def next(self, timeout: float = READ_TIMEOUT) -> Message | None:
        """The next message (comments and `retry:` noted on the way); None at the end."""
        event, data = "message", list[str]()
        while True:
            while b"\n" not in self._buffer:
                if not await self._more(timeout):
                    return None
            raw, self._buffer = self._buffer.split(b"\n", 1)
            line = raw.decode().rstrip("\r")
            if line == "":
                if data:
                    return Message(event, "\n".join(data), self.last_id)
                event, data = "message", []  # nothing to dispatch
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "":
                self.comments.append(value)
            elif name == "event":
                event = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                self.last_id = value
            elif name == "retry":
                self.retry = int(value)

    async def until_end(self, timeout: float = 30.0) -> list[Message]:
        """Every message up to `end` (included), or to the end of the body."""
        messages: list[Message] = []
        while True:
            message = await self.next(timeout)
            if message is None:
                return messages
            messages.append(message)
            if message.event == "end":
                return messages

    def close(self) -> None:
        self.writer.close()


def events_query(pairs: list[tuple[str, str]], **extra: str) -> str:
    query = [item for task, token in pairs for item in (("task", task), ("token", token))]
    return urlencode(query + list(extra.items()))


@asynccontextmanager
async def open_stream(base: str, query: str, last_event_id: str | None = None,
                      origin: str | None = None,
                      path: str = EVENTS_PATH) -> AsyncIterator[SseResponse]:
    """GET the stream; the response's status and headers read, its body not yet."""
    url = urlsplit(base)
    reader, writer = await asyncio.open_connection(url.hostname, url.port, limit=2 ** 20)
    headers = [f"GET {path}?{query} HTTP/1.1", f"Host: {url.netloc}",
               "Accept: text/event-stream", "Cache-Control: no-cache", "Connection: close"]
    if last_event_id is not None:
        headers.append(f"Last-Event-ID: {last_event_id}")
    if origin is not None:
        headers.append(f"Origin: {origin}")
    writer.write(("\r\n".join(headers) + "\r\n\r\n").encode())
    await writer.drain()
    try:
        status_line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
        status = int(status_line.split()[1])
        response_headers: dict[str, str] = {}
        while True:
            line = (await asyncio.wait_for(reader.readline(), READ_TIMEOUT)).decode().strip()
            if not line:
                break
            name, _, value = line.partition(":")
            response_headers[name.strip().lower()] = value.strip()
        chunked = response_headers.get("transfer-encoding", "").lower() == "chunked"
        yield SseResponse(status, response_headers, reader, writer, chunked)
    finally:
        writer.close()
