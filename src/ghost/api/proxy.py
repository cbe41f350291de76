"""Catch-all proxy: any request Ghost does not handle goes to the upstream, streamed both ways.

The request body is handed to httpx as an async iterator over the client's ASGI messages and the
upstream body is handed back the same way, so neither is ever held whole in memory. The phases of
one request, and who notices a client that goes away in each:

1. body upload: Starlette's `request.stream()` raises ClientDisconnect;
2. waiting for the upstream's headers: `_cancel_on_disconnect` watches the client;
3. relaying the upstream body: `WatchedStreamingResponse` watches the client.

In every case the upstream request or response is closed at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable, Iterator

import anyio
import httpx
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import Receive

from ghost.api.auth import require_key
from ghost.api.deps import get_runtime
from ghost.api.streaming import WatchedStreamingResponse
from ghost.errors import UpstreamError, UpstreamUnavailable, error_body
from ghost.llm.client import translate_upstream_error, upstream_errors
from ghost.runtime import Runtime

router = APIRouter()
log = logging.getLogger("ghost.proxy")

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
_HOP_BY_HOP_RAW = frozenset(name.encode() for name in HOP_BY_HOP)
# Never forwarded upstream: the client's Ghost credentials, what httpx sets itself, and `expect`
# (Ghost's own server already answered the client's 100-continue).
_REQUEST_DROP = _HOP_BY_HOP_RAW | {b"host", b"x-ghost-key", b"authorization", b"x-request-id", b"expect"}
# Ghost's server sets its own date, server and request id.
_RESPONSE_DROP = _HOP_BY_HOP_RAW | {b"x-request-id", b"date", b"server"}
_STREAM_FLAG = re.compile(rb'"stream"\s*:\s*true')
_STREAMING_TYPES = ("text/event-stream", "application/x-ndjson")
_NO_BUFFERING = [(b"x-accel-buffering", b"no"), (b"cache-control", b"no-cache")]
PROXY_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
CLIENT_CLOSED_REQUEST = 499  # nginx's code for "the client went away"; only ever seen in logs


def _connection_listed(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """Header names a `Connection` header marks as hop-by-hop for this one connection."""
    listed: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            listed.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return listed


def forward_request_headers(request: Request, runtime: Runtime) -> list[tuple[bytes, bytes]]:
    """The client's headers as the upstream should see them (repeats kept, nothing invented)."""
    raw = request.scope["headers"]
    drop = _REQUEST_DROP | listed if (listed := _connection_listed(raw)) else _REQUEST_DROP
    headers = [(name, value) for name, value in raw if name not in drop]
    headers += [(k.encode(), v.encode()) for k, v in runtime.upstream_headers().items()]
    headers.append((b"x-request-id", request.scope.get("ghost.request_id", "").encode()))
    return headers


def forward_response_headers(upstream: httpx.Response, streaming: bool) -> list[tuple[bytes, bytes]]:
    """The upstream's headers as the client should see them (repeats such as Set-Cookie kept)."""
    raw = upstream.headers.raw
    drop = _RESPONSE_DROP | _connection_listed(raw) if "connection" in upstream.headers else _RESPONSE_DROP
    headers = [(name.lower(), value) for name, value in raw if name.lower() not in drop]
    if streaming:
        headers = [(k, v) for k, v in headers if k != b"cache-control"] + _NO_BUFFERING
    return headers


class StreamFlagScanner:
    """Pass request body chunks through while noticing a JSON `"stream": true`.

    `done` is set once the last chunk has been handed on, so the client's connection may then be
    watched for a hang-up without stealing body messages.
    """

    def __init__(self, source: AsyncIterator[bytes]) -> None:
        self.source = source
        self.streaming = False
        self.done = asyncio.Event()
        self._tail = b""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.source:
            if not self.streaming and chunk:
                window = self._tail + chunk
                self.streaming = _STREAM_FLAG.search(window) is not None
                self._tail = window[-32:]
            if chunk:
                yield chunk
        self.done.set()


def _has_body(request: Request) -> bool:
    headers = request.headers
    return "transfer-encoding" in headers or headers.get("content-length", "0") not in ("0", "")


def upstream_target(base: str, request: Request) -> str:
    """The upstream URL for this request, keeping the client's path and query bytes as sent."""
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"")
    target = base + raw_path.decode("latin-1")
    return f"{target}?{query.decode('latin-1')}" if query else target


def _sse_error_event(error: UpstreamError) -> bytes:
    payload = json.dumps(error_body(error.message, error.error_type))
    return f"event: error\ndata: {payload}\n\ndata: [DONE]\n\n".encode()


class UpstreamRelay:
    """The upstream body as the client's response body.

    `aclose()` always closes the upstream response, even when iteration never started (a client
    gone before the first byte), so no pooled connection is ever left checked out. A transport
    failure mid-body becomes, for an event stream that stopped between two events, an in-band
    `event: error` and `data: [DONE]`; otherwise it is raised, and the client's connection is
    aborted so it sees an incomplete body rather than a clean end.
    """

    def __init__(self, upstream: httpx.Response, *, event_stream: bool) -> None:
        self.upstream = upstream
        self.event_stream = event_stream
        self._chunks = upstream.aiter_raw()
        self._between_events = True
        self._finished = False

    def __aiter__(self) -> "UpstreamRelay":
        return self

    async def __anext__(self) -> bytes:
        if self._finished:
            raise StopAsyncIteration
        try:
            chunk = await self._chunks.__anext__()
        except httpx.TransportError as exc:
            return self._fail(translate_upstream_error(exc, "upstream stream"))
        if self.event_stream:
            self._between_events = chunk.endswith((b"\n\n", b"\r\n\r\n"))
        return chunk

    def _fail(self, error: UpstreamError) -> bytes:
        log.warning("proxied %s broke off: %s", self.upstream.request.url.path, error.message)
        if not (self.event_stream and self._between_events):
            raise error
        self._finished = True
        return _sse_error_event(error)

    async def aclose(self) -> None:
        await self.upstream.aclose()


async def _cancel_on_disconnect(receive: Receive, body_done: asyncio.Event | None,
                                scope: anyio.CancelScope) -> None:
    """Cancel `scope` if the client hangs up; starts listening once its body has been read."""
    if body_done is not None:
        await body_done.wait()
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


async def send_upstream(http: httpx.AsyncClient, outgoing: httpx.Request, request: Request,
                        body_done: asyncio.Event | None) -> httpx.Response | None:
    """Send `outgoing` and return the streaming response, or None if the client left first."""
    with anyio.CancelScope() as scope:
        watcher = asyncio.ensure_future(_cancel_on_disconnect(request.receive, body_done, scope))
        try:
            with upstream_errors():
                return await http.send(outgoing, stream=True)
        finally:
            watcher.cancel()
    return None  # cancelled: httpx has closed the upstream request on its way out


def _routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route, looking inside included routers (newer FastAPI keeps them as one entry each)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        yield from _routes(included.routes) if included is not None else (route,)


def _method_not_allowed(request: Request) -> None:
    """A path Ghost serves itself, asked with a method it does not serve: 405, never proxied."""
    path = request.url.path
    if path not in request.app.state.own_paths:
        return
    allowed = sorted({method for route in _routes(request.app.routes) if isinstance(route, APIRoute)
                      and route.path == path for method in route.methods})
    raise HTTPException(405, f"method {request.method} not allowed on {path}",
                        headers={"Allow": ", ".join(allowed)})


@router.api_route("/{path:path}", methods=PROXY_METHODS,
                  dependencies=[Depends(_method_not_allowed), Depends(require_key)],
                  summary="Forward any other request to the upstream")
async def proxy(path: str, request: Request, runtime: Runtime = Depends(get_runtime)) -> Response:
    if not runtime.upstream_url:
        raise UpstreamUnavailable("no upstream is configured")
    scanner = StreamFlagScanner(request.stream()) if _has_body(request) else None
    outgoing = httpx.Request(
        request.method,
        upstream_target(runtime.upstream_url, request),
        headers=forward_request_headers(request, runtime),
        content=scanner.__aiter__() if scanner else None,
    )
    started = time.perf_counter()
    try:
        upstream = await send_upstream(runtime.http, outgoing, request, scanner.done if scanner else None)
    except ClientDisconnect:
        upstream = None
    if upstream is None:
        log.info("client went away before the upstream answered %s %s", request.method, request.url.path)
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    request.scope["ghost.upstream_ms"] = round((time.perf_counter() - started) * 1000, 2)
    content_type = upstream.headers.get("content-type", "")
    event_stream = content_type.startswith("text/event-stream")
    streaming = (scanner is not None and scanner.streaming) or content_type.startswith(_STREAMING_TYPES)
    response = WatchedStreamingResponse(UpstreamRelay(upstream, event_stream=event_stream),
                                        status_code=upstream.status_code)
    response.raw_headers = forward_response_headers(upstream, streaming)
    return response
