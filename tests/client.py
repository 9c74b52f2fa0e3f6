"""Test clients that behave as a user's: HTTP with Django's CSRF cookie, and a WebSocket."""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import urllib.error
import urllib.request
from typing import Any

import websockets

RECV_TIMEOUT = 15.0


class Http:
    """An HTTP client that keeps cookies and sends the CSRF token back, as a browser page does."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def csrf(self) -> str:
        for cookie in self.jar:
            if cookie.name == "csrftoken":
                return str(cookie.value)
        self.request("GET", "/")
        return self.csrf()

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = None if body is None else (body if isinstance(body, bytes) else
                                          json.dumps(body).encode())
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers=headers or {})
        try:
            with self.opener.open(req, timeout=10) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw

    def start_many(self, count: int, **kwargs: Any) -> dict[str, str]:
        """Start `count` demo tasks; their ids mapped to their tokens."""
        tokens: dict[str, str] = {}
        for _ in range(count):
            status, started = self.start(**kwargs)
            assert status == 202, started
            tokens[started["task_id"]] = started["token"]
        return tokens

    def start(self, task: str = "demo.count", **kwargs: Any) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json", "X-CSRFToken": self.csrf()}
        return self.request("POST", "/api/tasks/", {"task": task, "kwargs": kwargs}, headers)


class Ws:
    def __init__(self, conn: websockets.ClientConnection) -> None:
        self.conn = conn

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.conn.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.conn.recv(), timeout)
        frame: dict[str, Any] = json.loads(raw)
        return frame

    async def subscribe(self, task_id: str, token: str, **extra: Any) -> None:
        await self.send({"type": "subscribe", "task_id": task_id, "token": token, **extra})

    async def until_progress(self, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        """Read up to the first PROGRESS frame (the task is running); that frame."""
        while (frame := await self.recv(timeout)).get("state") != "PROGRESS":
            pass
        return frame

    async def cancel_when_running(self, task_id: str, token: str) -> list[dict[str, Any]]:
        """Subscribe, send `cancel` once the task reports progress; every frame up to
        the final one."""
        await self.subscribe(task_id, token)
        await self.until_progress()
        await self.send({"type": "cancel", "task_id": task_id, "token": token})
        return await self.frames_until_final(task_id)

    async def frames_until_final(self, task_id: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Every frame for `task_id` up to and including the first final one."""
        frames: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                if frame.get("task_id") != task_id:
                    continue
                frames.append(frame)
                if frame.get("final"):
                    return frames


def connect(url: str, origin: str | None = None) -> Any:
    headers = {"Origin": origin} if origin else None
    return websockets.connect(url, origin=None, additional_headers=headers, open_timeout=10)
