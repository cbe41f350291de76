"""Catch-all proxy: any request Ghost does not handle goes to the upstream, streamed both ways.

The request body is handed to the upstream as an async iterator over the client's ASGI messages
and the upstream body is handed back the same way, so neither is ever held whole in memory. The
phases of one request, and who notices a client that goes away in each:

1. body upload: Starlette's `request.stream()` raises ClientDisconnect;
2. waiting for the upstream's headers: `_cancel_on_disconnect` watches the client;
3. relaying the upstream body: `WatchedStreamingResponse` watches the client.

In every case the upstream request or response is closed at once.

The bytes travel through `UpstreamSession`, an aiohttp client session with its own keep-alive
pool (cheaper per request than httpx on this path), and requests for paths Ghost does not serve
reach `forward` through `ProxyFastPath`,
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
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator
from contextvars import ContextVar
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import anyio
from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send
from yarl import URL

from ghost.api import openapi
from ghost.api.auth import check_key, require_key
from ghost.api.errors import error_response
from ghost.api.streaming import WatchedStreamingResponse
from ghost.config import Settings
from ghost.errors import BadRequest, GhostError, echo, UpstreamError, UpstreamTimeout, UpstreamUnavailable, error_body
from ghost.api.services import services_of
from ghost.llm.upstream import HttpUpstream

router = APIRouter()
log = logging.getLogger("ghost.proxy")

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
_HOP_BY_HOP_RAW = frozenset(name.encode() for name in HOP_BY_HOP)
# Never forwarded upstream: the client's Ghost credentials, what aiohttp sets itself (host, chunked
# framing), and `expect` (Ghost's own server already answered the client's 100-continue). The
# client's Content-Length is kept: aiohttp then sends the body with that length, not chunked.
_REQUEST_DROP = _HOP_BY_HOP_RAW | {b"host", b"x-ghost-key", b"authorization", b"x-request-id", b"expect"}
# Headers aiohttp would otherwise invent; the upstream sees only what the client sent.
_NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
SMALL_BODY = 64 * 1024  # a declared body up to this size is read first and sent with the head
STALE_RETRIES = 2  # times an in-memory request is sent again when its pooled connection was closed
_attempt: ContextVar[SimpleNamespace | None] = ContextVar("upstream_attempt", default=None)
# Ghost's server sets its own date, server and request id.
_RESPONSE_DROP = _HOP_BY_HOP_RAW | {b"x-request-id", b"date", b"server"}
_STREAM_FLAG = re.compile(rb'"stream"\s*:\s*true')
_STREAMING_TYPES = (b"text/event-stream", b"application/x-ndjson")
_NO_BUFFERING = [(b"x-accel-buffering", b"no"), (b"cache-control", b"no-cache")]
_FORBIDDEN_TARGET_CHARS = ("#", "\\", " ", "\t", "\r", "\n", "\0")  # never in a valid origin-form target
PROXY_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
CLIENT_CLOSED_REQUEST = 499  # nginx's code for "the client went away"; only ever seen in logs


# --- the upstream session ---------------------------------------------------------------------------


class UpstreamResponse:
    """The upstream's status, its headers as lower-case byte pairs, and its body as raw chunks.

    The caller must `aclose()` it: a body read to the end gives the connection back to the pool,
    anything else closes it.
    """

    def __init__(self, session: UpstreamSession, response: aiohttp.ClientResponse) -> None:
        self.session = session
        self.response = response
        self.status = response.status
        self.headers = [(name.lower(), value) for name, value in response.raw_headers]
        self._chunks = response.content.iter_any()

    def read_if_complete(self) -> bytes | None:
        """The whole body if it is already here, releasing the connection; else None (stream it)."""
        content = self.response.content
        if not content.is_eof():
            return None
        try:
            body = content.read_nowait(-1)
        except aiohttp.ClientError:  # it broke off: let the streaming path report it
            return None
        self.response.release()
        return body

    def __aiter__(self) -> UpstreamResponse:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            self.response.release()
            raise
        except (aiohttp.ClientError, OSError) as exc:
            raise self.session.error(exc) from exc

    async def aclose(self) -> None:
        if self.response.content.at_eof():
            self.response.release()
        else:
            self.response.close()  # half-read: the connection cannot be reused


class _Connector(aiohttp.TCPConnector):
    """aiohttp's pool, telling the request in flight (`_attempt`) whether its connection is reused.

    aiohttp's trace hooks can tell too, but add a handful of awaits to every request.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._handed_out: weakref.WeakSet[object] = weakref.WeakSet()

    async def connect(self, req: aiohttp.ClientRequest, traces: list[Any], timeout: aiohttp.ClientTimeout,
                      ) -> aiohttp.connector.Connection:
        conn = await super().connect(req, traces, timeout)
        if (attempt := _attempt.get()) is not None:
            attempt.reused = conn.protocol in self._handed_out
        self._handed_out.add(conn.protocol)
        return conn


class UpstreamSession:
    """An aiohttp session to one upstream origin, set up to forward bytes and nothing more.

    No cookie jar, no decompression, no redirects, no invented headers; the path and query go out
    exactly as the client sent them. At most `max_connections` connections, kept alive.
    """

    def __init__(self, base_url: str, *, max_connections: int, connect_timeout: float,
                 read_timeout: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) upstream URL: {base_url!r}")
        self.base = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self.origin = URL(self.base)
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.session = aiohttp.ClientSession(
            connector=_Connector(limit=max_connections, limit_per_host=0),
            # `connect` bounds both the wait for a free pooled connection and the TCP connect;
            # `sock_read` is silence from the upstream, before its headers and between chunks.
            timeout=aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout),
            auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_NO_AUTO_HEADERS, trust_env=False)

    def url(self, target: bytes) -> URL:
        """The upstream URL for the client's path and query, percent-encoding untouched.

        Only an origin-form target (`/path?query`) is joined onto the base, and the result must
        still name the upstream's own scheme, host and port: a request line such as
        `GET *@127.0.0.1:9/admin` or `GET //other.host/x` must never reach another server.
        """
        text = target.decode("latin-1")
        if not is_origin_form(text):
            raise BadRequest(f"request target must be a path starting with '/': '{echo(text)}'")
        try:
            url = URL(self.base + text, encoded=True)
        except ValueError as exc:
            raise BadRequest(f"request target is not a valid path: '{echo(text)}'") from exc
        if (url.scheme, url.host, url.port) != (self.origin.scheme, self.origin.host, self.origin.port):
            raise BadRequest(f"request target leaves the upstream: '{echo(text)}'")
        return url

    async def request(self, method: str, target: bytes, headers: list[tuple[bytes, bytes]],
                      body: AsyncIterator[bytes] | None, content_length: int | None) -> UpstreamResponse:
        """Send one request and return once the upstream's headers are in.

        `body` None means no body; with a body, `content_length` None sends it chunked.
        """
        url = self.url(target)  # first: a refused target costs nothing
        pairs = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]
        try:
            if body is None or (content_length is not None and content_length <= SMALL_BODY):
                data = None if body is None else b"".join([chunk async for chunk in body])  # one write with the head
                response = await self._send_again_if_stale(method, url, pairs, data)
            else:
                async with asyncio.timeout(None) as deadline:
                    watched = WriteWatch(body, deadline, self.read_timeout)
                    response = await self.session.request(method, url, headers=pairs, data=watched.chunks(),
                                                          allow_redirects=False)
                    watched.stop()
        except (aiohttp.ClientError, OSError) as exc:  # OSError includes TimeoutError
            if isinstance(exc.__cause__, (GhostError, ClientDisconnect)):
                # aiohttp writes the body in a task of its own and reports what the body iterator
                # raised (the client hung up, the body limit) as a connection error caused by it.
                raise exc.__cause__ from None
            raise self.error(exc) from exc
        return UpstreamResponse(self, response)

    async def _send_again_if_stale(self, method: str, url: URL, headers: list[tuple[str, str]],
                                   data: bytes | None) -> aiohttp.ClientResponse:
        """Send a request whose body is in memory; again if a kept-alive connection was stale.

        An upstream may close an idle connection just as it is reused. aiohttp sends again only
        idempotent methods; the proxy's traffic is mostly POST, so it does so itself, but only when
        the failed attempt went out on a reused connection and the upstream said nothing at all.
        """
        for _ in range(STALE_RETRIES):
            attempt = SimpleNamespace(reused=False)
            token = _attempt.set(attempt)
            try:
                return await self.session.request(method, url, headers=headers, data=data, allow_redirects=False)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):  # closed, or reset (RST)
                if not attempt.reused:
                    raise
            finally:
                _attempt.reset(token)
        return await self.session.request(method, url, headers=headers, data=data, allow_redirects=False)

    def error(self, exc: BaseException) -> UpstreamError:
        """aiohttp's exception as Ghost's."""
        if type(exc) is TimeoutError:  # WriteWatch's deadline, not one of aiohttp's timeouts
            return UpstreamTimeout(f"upstream stopped taking the request body for {self.read_timeout:g}s")
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return UpstreamTimeout(f"no upstream connection within {self.connect_timeout:g}s "
                                   "(unreachable in time, or all --upstream-max-connections busy)")
        if isinstance(exc, TimeoutError):
            return UpstreamTimeout(f"upstream read timed out after {self.read_timeout:g}s")
        if isinstance(exc, aiohttp.ClientConnectorError):
            return UpstreamUnavailable(f"upstream unreachable: {exc.os_error.strerror or exc.os_error}")
        return UpstreamUnavailable(f"upstream connection lost: {exc}")

    async def aclose(self) -> None:
        await self.session.close()


class WriteWatch:
    """A time limit on the upstream taking each chunk of a streamed request body.

    aiohttp has no write timeout: an upstream that stops reading would hold the request until the
    client gave up. aiohttp asks for the next chunk only once the last one was handed to the
    socket, so the deadline runs from a chunk's hand-over to the next ask, never while the client
    itself is slow to send. It fires by cancelling the request (`asyncio.timeout`).
    """

    def __init__(self, source: AsyncIterator[bytes], deadline: asyncio.Timeout, seconds: float) -> None:
        self.source, self.deadline, self.seconds = source, deadline, seconds
        self._watching = True

    async def chunks(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        async for chunk in self.source:
            if self._watching:
                self.deadline.reschedule(loop.time() + self.seconds)
            yield chunk
            if self._watching:
                self.deadline.reschedule(None)

    def stop(self) -> None:
        """The upstream has answered: what is left of the body is aiohttp's business alone."""
        self._watching = False


def make_pool(settings: Settings, upstream_url: str) -> UpstreamSession | None:
    """The proxy's upstream session (None without an upstream). Close it at shutdown."""
    if not upstream_url:
        return None
    return UpstreamSession(upstream_url, max_connections=settings.upstream_max_connections,
                           connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout)


def _pool(state: State) -> UpstreamSession:
    """The session the app's lifespan made (`app.state.proxy_pool`); 502 without an upstream."""
    pool: UpstreamSession | None = getattr(state, "proxy_pool", None)
    if pool is None:
        raise UpstreamUnavailable("no upstream is configured")
    return pool


# --- headers -------------------------------------------------------------------------------------------


def _connection_listed(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """Header names a `Connection` header marks as hop-by-hop for this one connection."""
    listed: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            listed.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return listed


def forward_request_headers(request: Request, upstream: HttpUpstream) -> list[tuple[bytes, bytes]]:
    """The client's headers as the upstream should see them (repeats kept, nothing invented)."""
    raw = request.scope["headers"]
    drop = _REQUEST_DROP | listed if (listed := _connection_listed(raw)) else _REQUEST_DROP
    headers = [(name, value) for name, value in raw if name not in drop]
    headers += [(k.encode(), v.encode()) for k, v in upstream.headers().items()]
    headers.append((b"x-request-id", request.scope.get("ghost.request_id", "").encode()))
    return headers


def forward_response_headers(upstream: UpstreamResponse, streaming: bool) -> list[tuple[bytes, bytes]]:
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


def is_origin_form(target: str) -> bool:
    """`/path` or `/path?query`: not `*`, not an absolute URI, not `//authority/...`."""
    return target.startswith("/") and not target.startswith("//") and not any(
        ch in target for ch in _FORBIDDEN_TARGET_CHARS)


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


async def send_upstream(pool: UpstreamSession, request: Request, headers: list[tuple[bytes, bytes]],
                        scanner: StreamFlagScanner | None, length: int | None) -> UpstreamResponse | None:
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
    return None  # cancelled by the watcher; aiohttp closed the half-done exchange on its way out


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

    def __init__(self, upstream: UpstreamResponse, path: str, *, event_stream: bool) -> None:
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


def _client_response(request: Request, upstream: UpstreamResponse, streaming_body: bool) -> Response:
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


async def forward(request: Request) -> Response:
    """Proxy one request to the upstream; the response streams the upstream's reply back."""
    upstream = services_of(request).upstream
    upstream.check_available()
    pool = _pool(request.app.state)
    headers = forward_request_headers(request, upstream)
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
                  summary="Forward any other request to the upstream", **openapi.PROXY)
async def proxy(request: Request) -> Response:
    return await forward(request)


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
            response = await forward(request)
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
