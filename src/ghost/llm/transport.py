"""The one HTTP client to the upstream's chat and proxied paths: an aiohttp session, kept alive.

Both the chat path (`ghost.llm.chat`, through `HttpUpstream.session`) and the catch-all proxy
(`ghost.api.proxy`) send over it, so they share one connection pool. aiohttp is used, not httpx,
because on these paths httpx cost several times the rest of Ghost per request (per-read cancel
scopes, its chunk parsing, head and body in two writes; docs/proxy.md, "How it is built", and
docs/benchmarks.md). Two things aiohttp does not do are added: a request whose body is in memory
is sent again when it went out on a kept-alive connection the upstream had just closed
(`_send_again_if_stale`), and a streamed request body has a write deadline (`WriteWatch`).
Failures become Ghost's errors in `ghost.llm.transport_errors`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from starlette.requests import ClientDisconnect
from yarl import URL

from ghost.config import Settings
from ghost.errors import GhostError, UpstreamError
from ghost.llm.endpoint import UpstreamEndpoint
from ghost.llm.transport_errors import from_aiohttp

# Headers aiohttp would otherwise invent; the upstream sees only what the client sent.
_NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
SMALL_BODY = 64 * 1024  # a declared body up to this size is read first and sent with the head
STALE_RETRIES = 2  # times an in-memory request is sent again when its pooled connection was closed


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


async def _note_reuse(session: aiohttp.ClientSession, context: SimpleNamespace,
                     params: aiohttp.TraceConnectionReuseconnParams) -> None:
    """aiohttp's `on_connection_reuseconn` hook: the request's attempt went out on a pooled connection."""
    if isinstance(attempt := context.trace_request_ctx, _Attempt):
        attempt.reused = True


def _reuse_tracing() -> aiohttp.TraceConfig:
    """aiohttp's public trace hooks, telling each request sent with an `_Attempt` as its
    `trace_request_ctx` whether its connection came from the pool. (A session with a trace config
    awaits a few no-op signals per request and none per body chunk: the proxy's CPU per request,
    measured side by side with the connector override this replaces, did not grow.)"""
    tracing = aiohttp.TraceConfig()
    tracing.on_connection_reuseconn.append(_note_reuse)
    tracing.freeze()
    return tracing


class _Attempt:
    """One sending of a request: whether it went out on a reused connection."""

    __slots__ = ("reused",)

    def __init__(self) -> None:
        self.reused = False


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
            connector=aiohttp.TCPConnector(limit=max_connections, limit_per_host=0),
            trace_configs=[_reuse_tracing()],
            # `connect` bounds both the wait for a free pooled connection and the TCP connect;
            # `sock_read` is silence from the upstream, before its headers and between chunks.
            timeout=aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout),
            auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_NO_AUTO_HEADERS, trust_env=False)

    async def post(self, url: str, headers: list[tuple[str, str]], body: bytes) -> UpstreamResponse:
        """POST a body held in memory (the chat path); the response once its headers are in."""
        try:
            response = await self._send_again_if_stale("POST", URL(url), headers, body)
        except (aiohttp.ClientError, OSError) as exc:  # OSError includes TimeoutError
            raise self.error(exc) from exc
        return UpstreamResponse(self, response)

    async def request(self, method: str, url: URL, headers: list[tuple[bytes, bytes]],
                      body: AsyncIterator[bytes] | None, content_length: int | None) -> UpstreamResponse:
        """Send one request and return once the upstream's headers are in.

        `body` None means no body; with a body, `content_length` None sends it chunked.
        """
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
            attempt = _Attempt()
            try:
                return await self.session.request(method, url, headers=headers, data=data, allow_redirects=False,
                                                  trace_request_ctx=attempt)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):  # closed, or reset (RST)
                if not attempt.reused:
                    raise
        return await self.session.request(method, url, headers=headers, data=data, allow_redirects=False)

    def error(self, exc: BaseException) -> UpstreamError:
        return from_aiohttp(exc, connect_timeout=self.connect_timeout, read_timeout=self.read_timeout)

    async def aclose(self) -> None:
        await self.session.close()


class WriteWatch:
    """A time limit on the upstream taking each chunk of a streamed request body.

    aiohttp has no write timeout: an upstream that stops reading would hold the request until the
    client gave up. aiohttp asks for the next chunk only once the last one was handed to the
    socket, so the deadline runs from a chunk's hand-over to the next ask, never while the client
    itself is slow to send. It fires by cancelling the request (`asyncio.timeout`), which surfaces
    as a bare TimeoutError.
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


def make_pool(settings: Settings, endpoint: UpstreamEndpoint) -> UpstreamSession | None:
    """The upstream session of the chat path and the proxy (None without an upstream); closed at
    shutdown by whoever made it."""
    if not endpoint.exists:
        return None
    return UpstreamSession(endpoint.url, max_connections=settings.upstream_max_connections,
                           connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout)
