"""One proxied request, from the client's body going up to the upstream's headers coming back.

The request body is handed to the upstream as an async iterator over the client's ASGI messages
and the upstream body is handed back the same way (`relay`), so neither is ever held whole in
memory. The phases of one request, and who notices a client that goes away in each:

1. body upload: Starlette's `request.stream()` raises ClientDisconnect;
2. waiting for the upstream's headers: `unless_disconnected` (`ghost.api.disconnect`) watches the client;
3. relaying the upstream body: `WatchedStreamingResponse` watches the client.

In every case the upstream request or response is closed at once.
"""

from __future__ import annotations

import logging
import time

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ghost.api.disconnect import unless_disconnected
from ghost.api.proxy.headers import body_length, forward_request_headers
from ghost.api.proxy.relay import client_response
from ghost.api.proxy.scrub import scrubbed_error
from ghost.api.proxy.sniff import StreamFlagScanner
from ghost.api.proxy.target import upstream_target, upstream_url
from ghost.llm.transport import UpstreamResponse, UpstreamSession
from ghost.api.services import Services, services_of
from ghost.errors import UpstreamUnavailable

log = logging.getLogger("ghost.proxy")

CLIENT_CLOSED_REQUEST = 499  # nginx's code for "the client went away"; only ever seen in logs


def _pool(services: Services) -> UpstreamSession:
    """The upstream's session, the chat path's own (`Services.proxy_pool`); 502 without an upstream."""
    pool = services.proxy_pool
    if pool is None:
        raise UpstreamUnavailable("no upstream is configured")
    return pool


async def send_upstream(pool: UpstreamSession, request: Request, headers: list[tuple[bytes, bytes]],
                        scanner: StreamFlagScanner | None, length: int | None) -> UpstreamResponse | None:
    """Send the request; the upstream's response once its headers are in, or None if the client left
    (then aiohttp has closed the half-done exchange). The hang-up watch starts once the body is read."""
    url = upstream_url(pool.base, pool.origin, upstream_target(request))  # first: a refused target costs nothing
    sending = pool.request(request.method, url, headers,
                           scanner.__aiter__() if scanner else None, length)
    try:
        return await unless_disconnected(request.receive, sending, after=scanner.done if scanner else None)
    except ClientDisconnect:
        return None


async def forward(request: Request) -> Response:
    """Proxy one request to the upstream; the response streams the upstream's reply back."""
    services = services_of(request)
    upstream = services.upstream
    upstream.check_available()
    pool = _pool(services)
    headers = forward_request_headers(request, upstream.endpoint)
    has_body, length = body_length(request.scope["headers"])
    scanner = StreamFlagScanner(request.stream()) if has_body else None
    started = time.perf_counter()
    upstream = await send_upstream(pool, request, headers, scanner, length)
    if upstream is None:
        log.info("client went away before the upstream answered %s %s", request.method, request.url.path)
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    request.scope["ghost.upstream_ms"] = round((time.perf_counter() - started) * 1000, 2)
    if services.bundled is not None and upstream.status >= 400:  # Ghost's own server: no traceback out
        return await scrubbed_error(upstream)
    return client_response(request, upstream, scanner is not None and scanner.streaming)
