"""Pure ASGI middleware: request ids with an access log line; the steps of the innermost layer for
request body limits and the last line of defence against unexpected exceptions.

Written as raw ASGI rather than BaseHTTPMiddleware so streaming bodies pass through untouched.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ghost.api.observe import route_label
from ghost.api.route_table import RouteTable
from ghost.config import Settings
from ghost.observe.logs import REQUEST_ID
from ghost.api.error_shape import send_error
from ghost.errors import GhostError, LimitExceeded

access_log = logging.getLogger("ghost.access")
error_log = logging.getLogger("ghost.errors")
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

        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._log(scope, request_id, status, time.perf_counter() - started)
            REQUEST_ID.reset(token)

    @staticmethod
    def _log(scope: Scope, request_id: str, status: int, seconds: float) -> None:
        if not access_log.isEnabledFor(logging.INFO):  # --log-level warning: no line, nothing built
            return
        line = {
            "request_id": request_id,
            "method": scope["method"],
            "path": scope["path"],
            "status": status or None,
            "duration_ms": round(seconds * 1000, 2),
        }
        line["route"] = route_label(scope)  # the template, as the metrics label it
        if "ghost.trace_id" in scope:
            line["trace_id"] = scope["ghost.trace_id"]
        if "ghost.user" in scope:  # whose workspace the request acted on (ghost.api.caller)
            line["user"] = scope["ghost.user"]
        if "ghost.upstream_ms" in scope:
            line["upstream_ms"] = scope["ghost.upstream_ms"]
        client = scope.get("client")
        if client:
            line["client"] = client[0]
        # Text logs show the fields as the message; JSON logs (ghost.observe.logs) take them as they
        # are: the text is made only by a formatter that asks for the message, once.
        access_log.info("%s", _JsonText(line), extra={"fields": line})


class _JsonText:
    """A log argument written as JSON when (and only when) a handler formats the message."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return json.dumps(self.value)


class BodyLimit:
    """Refuse request bodies larger than the cap of their path's route (`ghost.api.route_table`),
    whether declared or streamed. A step of the innermost middleware (`ghost.api.route_entry`)."""

    def __init__(self, routes: RouteTable, settings: Settings) -> None:
        self.routes = routes
        self.settings = settings

    def limit_for(self, path: str) -> int:
        return self.routes.spec_for(path).cap.limit(self.settings)

    async def refused(self, scope: Scope, send: Send, limit: int) -> bool:
        """Whether the request declares a body over `limit`, which is then answered with a 413."""
        declared = _content_length(scope["headers"])
        if declared is not None and declared > limit:
            await _send_413(scope, send, limit)
            return True
        return False

    @staticmethod
    def counted(receive: Receive, limit: int) -> Receive:
        """`receive`, raising LimitExceeded once the body streamed in passes `limit`."""
        return _counting_receive(receive, limit)


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


async def _send_413(scope: Scope, send: Send, limit: int) -> None:
    # The body is left unread, so the connection cannot be reused.
    await send_error(scope, send, 413, f"request body larger than {limit} bytes", "request_too_large",
                     ((b"connection", b"close"),))


async def answer_unexpected(scope: Scope, send: Send, exc: Exception, started: bool) -> None:
    """Turn an exception no handler took into a 500 in the error shape, or an aborted connection.

    Called by the innermost middleware (`ghost.api.route_entry`, just outside the exception
    handlers), so its 500 still passes through the request-id, CORS and access-log middleware;
    Starlette's own ServerErrorMiddleware sits outside all of them. The body never carries the
    traceback, only the request id to quote. Once the response has started nothing can be said any
    more: it returns without finishing the response, and the server closes the connection so the
    client sees an incomplete body, not a clean end.
    """
    request_id = scope.get("ghost.request_id", "")
    if started:
        _log_aborted(request_id, exc)
        return
    error_log.exception("unhandled error in request %s", request_id)
    await send_error(scope, send, 500, f"internal error (request {request_id})", "internal_error")


def _log_aborted(request_id: str, exc: Exception) -> None:
    cause = exc if isinstance(exc, GhostError) else exc.__cause__
    if isinstance(cause, GhostError):  # an expected failure (upstream gone), not a bug
        error_log.warning("request %s aborted mid-response: %s", request_id, cause.message)
    else:
        error_log.exception("request %s aborted mid-response by an unhandled error", request_id)

