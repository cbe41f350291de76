"""Pure ASGI middleware: request ids with an access log line, and request body limits.

Written as raw ASGI rather than BaseHTTPMiddleware so streaming bodies pass through untouched.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ghost.errors import LimitExceeded, error_body

access_log = logging.getLogger("ghost.access")
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def pick_request_id(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _VALID_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Tag every request with an id (X-Request-ID both ways) and log one line when it ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = pick_request_id(scope["headers"])
        scope["ghost.request_id"] = request_id
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._log(scope, request_id, status, time.perf_counter() - started)

    @staticmethod
    def _log(scope: Scope, request_id: str, status: int, seconds: float) -> None:
        line = {
            "request_id": request_id,
            "method": scope["method"],
            "path": scope["path"],
            "status": status or None,
            "duration_ms": round(seconds * 1000, 2),
        }
        if "ghost.upstream_ms" in scope:
            line["upstream_ms"] = scope["ghost.upstream_ms"]
        client = scope.get("client")
        if client:
            line["client"] = client[0]
        access_log.info(json.dumps(line))


class BodyLimitMiddleware:
    """Refuse request bodies larger than the limit for their path, whether declared or streamed."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = _content_length(scope["headers"])
        if declared is not None and declared > limit:
            await _send_413(send, limit)
            return
        await self.app(scope, _counting_receive(receive, limit), send)


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _counting_receive(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise LimitExceeded(f"request body larger than {limit} bytes")
        return message

    return wrapped


async def _send_413(send: Send, limit: int) -> None:
    body = json.dumps(error_body(f"request body larger than {limit} bytes", "request_too_large")).encode()
    await send({
        "type": "http.response.start",
        "status": 413,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")],
    })
    await send({"type": "http.response.body", "body": body})
