"""The one error writer: every error reply Ghost writes, in the shape its path's clients read.

Ghost's error shape is OpenAI's `{"error": {"message", "type"}}`. Ollama clients — and Open WebUI
on an Ollama connection — read `{"error": "<message>"}` and show anything else as a dead server,
so the Ollama routes answer in that shape, with the same statuses. Anthropic's SDKs read
`{"type": "error", "error": {"type", "message"}}`, so the Messages API's routes answer in that one
(and with a 400 where Ghost says 422: that API has no 422). Which shape a path takes is its entry in
the route table (`ghost.api.route_table`). Every place that answers an error — the exception
handlers, the body limit, the Host check, the last-resort 500 — writes it here, once, already in
that shape.

Only replies Ghost relays rather than writes (the proxy's, on a path whose clients read another
shape: Ollama's blob routes) are reshaped on their way out, by `RelayedErrorShape`. Success replies
and streams (status < 400) pass through untouched; an error inside a stream is already in-band in
the wire format's own shape.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ghost.api.protocols.anthropic.encoder import error_object, error_type_for_status
from ghost.api.route_table import ALL_ROUTES, Shape, shape_for
from ghost.errors import error_body

MAX_ERROR_BODY = 64 * 1024  # larger "error" bodies are not Ghost's own; they pass unchanged


def is_ollama_path(path: str) -> bool:
    """Whether this path's errors take Ollama's shape (Ollama's routes; not Ghost's own /api/*)."""
    return shape_for(path) is Shape.OLLAMA


def shaped_error(shape: Shape, status: int, message: str, error_type: str) -> tuple[int, Any]:
    """The status and body of an error reply in `shape`."""
    if shape is Shape.OLLAMA:
        return status, {"error": message}
    if shape is Shape.ANTHROPIC:
        status = 400 if status == 422 else status  # every invalid request is its 400
        return status, error_object(message, error_type_for_status(status))
    return status, error_body(message, error_type)


def error_response(path: str, status: int, message: str, error_type: str,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The error reply for a request to `path` (for exception handlers and routes)."""
    status, body = shaped_error(shape_for(path), status, message, error_type)
    return JSONResponse(body, status_code=status, headers=headers)


async def send_error(scope: Scope, send: Send, status: int, message: str, error_type: str,
                     headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """Send the error reply for `scope`'s path straight over ASGI (for the middleware)."""
    response = error_response(scope["path"], status, message, error_type)
    await send({"type": "http.response.start", "status": response.status_code,
                "headers": [*response.raw_headers, *headers]})
    await send({"type": "http.response.body", "body": response.body})


def _reshaper(shape: Shape) -> Callable[[Any, int], tuple[int, Any]] | None:
    """How a relayed error body in Ghost's shape becomes `shape`'s; None for Ghost's own shape."""
    if shape is Shape.OPENAI:
        return None

    def reshape(payload: Any, status: int) -> tuple[int, Any]:
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return shaped_error(shape, status, error["message"], str(error.get("type", "")))
        return status, payload  # already another shape (an Ollama upstream's own errors): as it is

    return reshape


class RelayedErrorShape:
    """Reshape the JSON error replies the proxy relays on paths whose clients read another shape
    than Ghost's (Ollama's blob routes). Ghost's own errors there are written in that shape already;
    reshaping one again leaves it as it is. Install it outermost."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        reshape = None
        if scope["type"] == "http":
            spec = ALL_ROUTES.spec_for(scope["path"])
            reshape = _reshaper(spec.shape) if spec.relayed else None
        if reshape is None:
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, _ReshapingSend(send, reshape).send)


class _ReshapingSend:
    def __init__(self, send: Send, reshape: Callable[[Any, int], tuple[int, Any]]) -> None:
        self._send = send
        self._reshape = reshape
        self._start: Message | None = None  # held back while an error body is collected
        self._body = bytearray()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            if message["status"] >= 400 and _is_json(message):
                self._start = message
                return
        elif message["type"] == "http.response.body" and self._start is not None:
            self._body += message.get("body", b"")
            if message.get("more_body", False) and len(self._body) <= MAX_ERROR_BODY:
                return
            await self._flush(more_body=message.get("more_body", False))
            return
        await self._send(message)

    async def _flush(self, *, more_body: bool) -> None:
        start, original = self._start, bytes(self._body)
        assert start is not None
        self._start = None
        status, body = start["status"], original
        if not more_body:
            status, body = _reshaped(original, status, self._reshape)
        if status != start["status"]:
            start = {**start, "status": status}
        if body != original:  # (an empty HEAD body, say, keeps its headers as they were)
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            start = {**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
        await self._send(start)
        await self._send({"type": "http.response.body", "body": body, "more_body": more_body})


def _is_json(start: Message) -> bool:
    for name, value in start.get("headers", []):
        if name.lower() == b"content-type":
            return value.split(b";")[0].strip().lower() == b"application/json"
    return False


def _reshaped(body: bytes, status: int, reshape: Callable[[Any, int], tuple[int, Any]]) -> tuple[int, bytes]:
    try:
        payload = json.loads(body)
    except ValueError:
        return status, body
    new_status, new_payload = reshape(payload, status)
    if new_payload is payload and new_status == status:
        return status, body  # not Ghost's shape: the bytes as they came
    return new_status, json.dumps(new_payload).encode()
