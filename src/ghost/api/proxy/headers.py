"""Which headers cross the proxy in each direction.

Hop-by-hop headers (and whatever a `Connection` header lists) belong to one connection and never
cross. Upstream, the client's Ghost credentials never go along and the upstream's own key is added
instead; downstream, Ghost's server sets its own date, server and request id. Everything else
crosses as sent, repeats included, and nothing is invented.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.requests import Request

from ghost.llm.endpoint import UpstreamEndpoint

_HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"proxy-connection",
    b"te", b"trailer", b"trailers", b"transfer-encoding", b"upgrade",
})
# Never forwarded upstream: the client's Ghost credentials, what aiohttp sets itself (host, chunked
# framing), and `expect` (Ghost's own server already answered the client's 100-continue). The
# client's Content-Length is kept: aiohttp then sends the body with that length, not chunked.
_REQUEST_DROP = _HOP_BY_HOP | {b"host", b"x-ghost-key", b"authorization", b"x-api-key", b"x-request-id", b"expect"}
# Ghost's server sets its own date, server and request id.
_RESPONSE_DROP = _HOP_BY_HOP | {b"x-request-id", b"date", b"server"}
# A reverse proxy in front (nginx) must pass a stream on as it comes.
_NO_BUFFERING = [(b"x-accel-buffering", b"no"), (b"cache-control", b"no-cache")]

Headers = list[tuple[bytes, bytes]]
_TRACE_CONTEXT = frozenset({b"traceparent", b"tracestate"})


def _connection_listed(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """Header names a `Connection` header marks as hop-by-hop for this one connection."""
    listed: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            listed.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return listed


def forward_request_headers(request: Request, endpoint: UpstreamEndpoint) -> Headers:
    """The client's headers as the upstream should see them (repeats kept, nothing invented)."""
    raw = request.scope["headers"]
    drop = _REQUEST_DROP | listed if (listed := _connection_listed(raw)) else _REQUEST_DROP
    own = endpoint.headers()
    if "traceparent" in own:  # tracing on: the upstream's parent is Ghost's span, not the client's
        drop = drop | _TRACE_CONTEXT
    headers = [(name, value) for name, value in raw if name not in drop]
    headers += [(k.encode(), v.encode()) for k, v in own.items()]
    headers.append((b"x-request-id", request.scope.get("ghost.request_id", "").encode()))
    return headers


def forward_response_headers(raw: Headers, streaming: bool) -> Headers:
    """The upstream's headers (names lower-case) as the client should see them (repeats such as
    Set-Cookie kept)."""
    drop = _RESPONSE_DROP | listed if (listed := _connection_listed(raw)) else _RESPONSE_DROP
    headers = [(name, value) for name, value in raw if name not in drop]
    if streaming:
        headers = [(k, v) for k, v in headers if k != b"cache-control"] + _NO_BUFFERING
    return headers


def header(headers: Headers, name: bytes) -> bytes | None:
    """The first value of `name` (lower-case) in raw headers, or None."""
    return next((value for key, value in headers if key == name), None)


def body_length(headers: Headers) -> tuple[bool, int | None]:
    """(has a body, its declared length or None for chunked)."""
    length = header(headers, b"content-length")
    if length is not None and length.strip().isdigit():
        return int(length) > 0, int(length)
    return header(headers, b"transfer-encoding") is not None, None
