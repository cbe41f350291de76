"""Which error shape a path answers in, and the middleware that makes every error reply follow it.

Ghost's error shape is OpenAI's `{"error": {"message", "type"}}`. Ollama clients — and Open WebUI
on an Ollama connection — read `{"error": "<message>"}` and show anything else as a dead server,
so the Ollama routes answer in that shape, with the same statuses. Anthropic's SDKs read
`{"type": "error", "error": {"type", "message"}}`, so the Messages API's routes answer in that one. Errors are raised in many
places (route handlers, the auth dependency, the body limit, the Host check, the last-resort 500),
so instead of teaching each of them about paths, one middleware outside all of them reshapes the
error replies of those paths. Success replies and streams (status < 400) pass through untouched;
an error inside a stream is already in-band in the wire format's own shape.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ghost.api.protocols.anthropic.encoder import error_object, error_type_for_status
from ghost.api.protocols.anthropic.paths import PATHS as ANTHROPIC_PATHS

# Ollama's API (and /api/blobs/<digest>); Ghost's own /api/* routes keep Ghost's shape.
OLLAMA_PATHS = frozenset({
    "/api/chat", "/api/generate", "/api/show", "/api/tags", "/api/ps", "/api/embed", "/api/embeddings",
    "/api/pull", "/api/push", "/api/delete", "/api/create", "/api/copy", "/api/version",
})
OLLAMA_PREFIXES = ("/api/blobs/",)
MAX_ERROR_BODY = 64 * 1024  # larger "error" bodies are not Ghost's own; they pass unchanged


def is_ollama_path(path: str) -> bool:
    """The one rule deciding the error shape: Ollama's on Ollama's routes, Ghost's elsewhere."""
    return path in OLLAMA_PATHS or path.startswith(OLLAMA_PREFIXES)


def reshaper_for(path: str) -> Callable[[Any, int], Any] | None:
    """The one rule deciding the error shape: Ollama's, Anthropic's, or Ghost's own (None)."""
    if is_ollama_path(path):
        return lambda payload, status: ollama_error(payload)
    if path in ANTHROPIC_PATHS:
        return anthropic_error
    return None


def status_for(path: str, status: int) -> int:
    """The status an error reply goes out with: Anthropic's API has no 422 (every invalid request is
    its 400 `invalid_request_error`), so on its paths Ghost's 422s — a bad `X-Ghost-Session`, a
    front end's user header sent twice — are 400s too."""
    return 400 if status == 422 and path in ANTHROPIC_PATHS else status


def anthropic_error(payload: Any, status: int) -> Any:
    """`{"error": {"message": m, ...}}` -> `{"type": "error", "error": {"type": t, "message": m}}`."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error_object(error["message"], error_type_for_status(status))
    return payload


def ollama_error(payload: Any) -> Any:
    """`{"error": {"message": m, ...}}` -> `{"error": m}`; anything else as it is."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return {"error": error["message"]}
    return payload


class ErrorShape:
    """Reshape JSON error replies (status >= 400) on Ollama's and Anthropic's paths. Install it outermost."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        reshape = reshaper_for(scope["path"]) if scope["type"] == "http" else None
        if reshape is None:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        await self.app(scope, receive, _ReshapingSend(send, reshape, lambda status: status_for(path, status)).send)



class _ReshapingSend:
    def __init__(self, send: Send, reshape: Callable[[Any, int], Any], status: Callable[[int], int]) -> None:
        self._send = send
        self._reshape = reshape
        self._status = status
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
        if (status := self._status(start["status"])) != start["status"]:
            start = {**start, "status": status}
        body = original if more_body else _reshaped(original, lambda p: self._reshape(p, start["status"]))
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


def _reshaped(body: bytes, reshape: Callable[[Any], Any]) -> bytes:
    try:
        payload = json.loads(body)
    except ValueError:
        return body
    return json.dumps(reshape(payload)).encode()
