"""Catch-all proxy: any request Ghost does not handle goes to the upstream, streamed both ways.

The request body is handed to the upstream as an async iterator over the client's ASGI messages
and the upstream body is handed back the same way, so neither is ever held whole in memory. The
phases of one request, and who notices a client that goes away in each:

1. body upload: Starlette's `request.stream()` raises ClientDisconnect;
2. waiting for the upstream's headers: `_cancel_on_disconnect` watches the client;
3. relaying the upstream body: `WatchedStreamingResponse` watches the client.

In every case the upstream request or response is closed at once.

The bytes travel through `ghost.llm.http1.Pool`, a lean keep-alive pool (see its docstring for why
not httpx), and requests for paths Ghost does not serve reach `forward` through `ProxyFastPath`,
which skips FastAPI's router and dependency machinery. The FastAPI route below is the same proxy
for everything else (it documents the proxy in OpenAPI and turns a wrong method on one of Ghost's
own paths into a 405).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable, Iterator

import anyio
from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from ghost.api.auth import check_key, require_key
from ghost.api.errors import error_response
from ghost.api.streaming import WatchedStreamingResponse
from ghost.config import Settings
from ghost.errors import GhostError, UpstreamError, UpstreamUnavailable, error_body
from ghost.llm import http1
from ghost.runtime import Runtime

router = APIRouter()
log = logging.getLogger("ghost.proxy")

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
_HOP_BY_HOP_RAW = frozenset(name.encode() for name in HOP_BY_HOP)
# Never forwarded upstream: the client's Ghost credentials, what the pool sets itself (host, body
# framing), and `expect` (Ghost's own server already answered the client's 100-continue).
_REQUEST_DROP = _HOP_BY_HOP_RAW | {b"host", b"x-ghost-key", b"authorization", b"x-request-id", b"expect",
                                   b"content-length"}
# Ghost's server sets its own date, server and request id.
_RESPONSE_DROP = _HOP_BY_HOP_RAW | {b"x-request-id", b"date", b"server"}
_STREAM_FLAG = re.compile(rb'"stream"\s*:\s*true')
_STREAMING_TYPES = (b"text/event-stream", b"application/x-ndjson")
_NO_BUFFERING = [(b"x-accel-buffering", b"no"), (b"cache-control", b"no-cache")]
PROXY_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
CLIENT_CLOSED_REQUEST = 499  # nginx's code for "the client went away"; only ever seen in logs
POOL_KEY = "proxy_pool"  # where the pool lives in Runtime.extras


def make_pool(settings: Settings) -> http1.Pool | None:
    """The proxy's upstream connection pool (None without an upstream). Close it at shutdown."""
    if not settings.upstream_url:
        return None
    return http1.Pool(settings.upstream_url, max_connections=settings.upstream_max_connections,
                      connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout)


def _pool(runtime: Runtime) -> http1.Pool:
    pool = runtime.extras.get(POOL_KEY)
    if pool is None:  # an app whose lifespan did not make one (or an upstream that came later)
        if not runtime.upstream_url:
            raise UpstreamUnavailable("no upstream is configured")
        settings = runtime.settings.model_copy(update={"upstream_url": runtime.upstream_url})
        pool = runtime.extras[POOL_KEY] = make_pool(settings)
    return pool


# --- headers -------------------------------------------------------------------------------------------


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


def forward_response_headers(upstream: http1.Response, streaming: bool) -> list[tuple[bytes, bytes]]:
    """The upstream's headers as the client should see them (repeats such as Set-Cookie kept)."""
    raw = upstream.headers  # names already lower-case
    drop = _RESPONSE_DROP | listed if (listed := _connection_listed(raw)) else _RESPONSE_DROP
    headers = [(name, value) for name, value in raw if name not in drop]
    if streaming:
        headers = [(k, v) for k, v in headers if k != b"cache-control"] + _NO_BUFFERING
    return headers


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    return next((value for key, value in headers if key == name), None)


# --- request body ------------------------------------------------------------------------------------------


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


def _body_length(headers: list[tuple[bytes, bytes]]) -> tuple[bool, int | None]:
    """(has a body, its declared length or None for chunked)."""
    length = _header(headers, b"content-length")
    if length is not None and length.strip().isdigit():
        return int(length) > 0, int(length)
    return _header(headers, b"transfer-encoding") is not None, None


def upstream_target(request: Request) -> bytes:
    """The path and query exactly as the client sent them."""
    scope = request.scope
    path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    return path + b"?" + query if query else path


# --- sending --------------------------------------------------------------------------------------------------


async def _cancel_on_disconnect(receive: Receive, body_done: asyncio.Event | None,
                                scope: anyio.CancelScope) -> None:
    """Cancel `scope` if the client hangs up; starts listening once its body has been read."""
    if body_done is not None:
        await body_done.wait()
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


async def send_upstream(pool: http1.Pool, request: Request, headers: list[tuple[bytes, bytes]],
                        scanner: StreamFlagScanner | None, length: int | None) -> http1.Response | None:
    """Send the request; the upstream's response once its headers are in, or None if the client left."""
    # A cancel scope, not a bare task.cancel(): a hang-up that races the upstream's answer must
    # not leave a pending cancellation behind to hit the response later.
    with anyio.CancelScope() as scope:
        watcher = asyncio.ensure_future(
            _cancel_on_disconnect(request.receive, scanner.done if scanner else None, scope))
        try:
            return await pool.request(request.method, upstream_target(request), headers,
                                      scanner.__aiter__() if scanner else None, length)
        except ClientDisconnect:
            return None
        finally:
            watcher.cancel()
    return None  # cancelled by the watcher; the pool closed the half-done exchange on its way out


# --- relaying -----------------------------------------------------------------------------------------------------


def _sse_error_event(error: GhostError) -> bytes:
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

    def __init__(self, upstream: http1.Response, path: str, *, event_stream: bool) -> None:
        self.upstream = upstream
        self.path = path
        self.event_stream = event_stream
        self._between_events = True
        self._finished = False

    def __aiter__(self) -> "UpstreamRelay":
        return self

    async def __anext__(self) -> bytes:
        if self._finished:
            raise StopAsyncIteration
        try:
            chunk = await self.upstream.__anext__()
        except UpstreamError as error:
            return self._fail(error)
        if self.event_stream:
            self._between_events = chunk.endswith((b"\n\n", b"\r\n\r\n"))
        return chunk

    def _fail(self, error: UpstreamError) -> bytes:
        log.warning("proxied %s broke off: %s", self.path, error.message)
        if not (self.event_stream and self._between_events):
            raise error
        self._finished = True
        return _sse_error_event(error)

    async def aclose(self) -> None:
        await self.upstream.aclose()


def _client_response(request: Request, upstream: http1.Response, streaming_body: bool) -> Response:
    content_type = _header(upstream.headers, b"content-type") or b""
    streaming = streaming_body or content_type.startswith(_STREAMING_TYPES)
    headers = forward_response_headers(upstream, streaming)
    body = None if streaming else upstream.read_if_complete()
    if body is not None:  # small and already here: one plain response, no streaming machinery
        response = Response(body, status_code=upstream.status)
        if _header(headers, b"content-length") is None and request.method != "HEAD":
            headers.append((b"content-length", b"%d" % len(body)))
    else:
        relay = UpstreamRelay(upstream, request.url.path, event_stream=content_type.startswith(b"text/event-stream"))
        response = WatchedStreamingResponse(relay, status_code=upstream.status)
    response.raw_headers = headers
    return response


async def forward(request: Request, runtime: Runtime) -> Response:
    """Proxy one request to the upstream; the response streams the upstream's reply back."""
    pool = _pool(runtime)
    headers = forward_request_headers(request, runtime)
    has_body, length = _body_length(request.scope["headers"])
    scanner = StreamFlagScanner(request.stream()) if has_body else None
    started = time.perf_counter()
    upstream = await send_upstream(pool, request, headers, scanner, length)
    if upstream is None:
        log.info("client went away before the upstream answered %s %s", request.method, request.url.path)
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    request.scope["ghost.upstream_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return _client_response(request, upstream, scanner is not None and scanner.streaming)


# --- the FastAPI route -----------------------------------------------------------------------------------


def _routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route, looking inside included routers (newer FastAPI keeps them as one entry each)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        yield from _routes(included.routes) if included is not None else (route,)


def ghost_route_methods(app: Starlette, scope: Scope) -> set[str]:
    """Methods Ghost's own routes answer on this scope's path; empty if only the proxy serves it."""
    methods: set[str] = set()
    for route in _routes(app.router.routes):
        if getattr(route, "endpoint", None) is proxy:
            continue
        if route.matches(scope)[0] is not Match.NONE:
            methods |= getattr(route, "methods", None) or {"*"}  # a mount answers anything
    return methods


async def _method_not_allowed(request: Request) -> None:
    """A path Ghost serves itself, asked with a method it does not serve: 405, never proxied."""
    allowed = ghost_route_methods(request.app, request.scope)
    if allowed and request.method not in allowed:
        raise HTTPException(405, f"method {request.method} not allowed on {request.url.path}",
                            headers={"Allow": ", ".join(sorted(allowed))})


@router.api_route("/{path:path}", methods=PROXY_METHODS,
                  dependencies=[Depends(_method_not_allowed), Depends(require_key)],
                  summary="Forward any other request to the upstream")
async def proxy(request: Request) -> Response:
    return await forward(request, request.app.state.runtime)


# --- the fast path ------------------------------------------------------------------------------------------


class ProxyFastPath:
    """Hand requests for paths no Ghost route serves straight to `forward`.

    Those requests would end at the catch-all route anyway, after FastAPI has tried every other
    route and solved the route's dependencies; that costs more than the forwarding itself. Install
    it innermost (inside the request-id, CORS and body-limit middleware, which still apply). A path
    any other route matches, with any method, goes the normal way, so 405s and Ghost's own routes
    are untouched. The decision is remembered per path.
    """

    MAX_REMEMBERED = 4096

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._proxied: dict[str, bool] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._is_proxied(scope):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            check_key(request)
            response = await forward(request, scope["app"].state.runtime)
        except GhostError as exc:
            response = error_response(exc.status_code, exc.message, exc.error_type, exc.headers or None)
        await response(scope, receive, send)

    def _is_proxied(self, scope: Scope) -> bool:
        path = scope["path"]
        known = self._proxied.get(path)
        if known is None:
            if len(self._proxied) >= self.MAX_REMEMBERED:
                self._proxied.clear()
            known = self._proxied[path] = not ghost_route_methods(scope["app"], scope)
        return known
