"""Catch-all proxy: any request Ghost does not handle goes to the upstream, streamed both ways."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator

import httpx
from fastapi import APIRouter, Depends, HTTPException, Request

from ghost.api.auth import require_key
from ghost.api.deps import get_runtime
from ghost.api.streaming import WatchedStreamingResponse
from ghost.errors import UpstreamUnavailable
from ghost.llm.client import upstream_errors
from ghost.runtime import Runtime

router = APIRouter()
log = logging.getLogger("ghost.proxy")

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
# Never forwarded upstream: the client's Ghost credentials, and what httpx sets itself.
_REQUEST_DROP = HOP_BY_HOP | {"host", "x-ghost-key", "authorization", "x-request-id"}
_STREAM_FLAG = re.compile(rb'"stream"\s*:\s*true')
_STREAMING_TYPES = ("text/event-stream", "application/x-ndjson")
PROXY_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]


def _connection_listed(headers: httpx.Headers | dict) -> set[str]:
    listed = headers.get("connection", "")
    return {token.strip().lower() for token in listed.split(",") if token.strip()}


def forward_request_headers(request: Request, runtime: Runtime) -> dict[str, str]:
    drop = _REQUEST_DROP | _connection_listed(request.headers)
    headers = {k: v for k, v in request.headers.items() if k.lower() not in drop}
    headers.update(runtime.upstream_headers())
    headers["x-request-id"] = request.scope.get("ghost.request_id", "")
    return headers


def forward_response_headers(upstream: httpx.Response, streaming: bool) -> dict[str, str]:
    drop = HOP_BY_HOP | _connection_listed(upstream.headers) | {"x-request-id"}
    headers = {k: v for k, v in upstream.headers.multi_items() if k.lower() not in drop}
    if streaming:
        headers["x-accel-buffering"] = "no"
        headers["cache-control"] = "no-cache"
    return headers


class StreamFlagScanner:
    """Pass request body chunks through while noticing a JSON `"stream": true`."""

    def __init__(self, source: AsyncIterator[bytes]) -> None:
        self.source = source
        self.streaming = False
        self._tail = b""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.source:
            if not self.streaming and chunk:
                window = self._tail + chunk
                self.streaming = _STREAM_FLAG.search(window) is not None
                self._tail = window[-32:]
            yield chunk


def _has_body(request: Request) -> bool:
    headers = request.headers
    return "transfer-encoding" in headers or int(headers.get("content-length", "0") or 0) > 0


def upstream_target(base: str, request: Request) -> str:
    """The upstream URL for this request, keeping the client's path and query bytes as sent."""
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"")
    target = base + raw_path.decode("latin-1")
    return f"{target}?{query.decode('latin-1')}" if query else target


async def _relay(upstream: httpx.Response) -> AsyncIterator[bytes]:
    try:
        with upstream_errors("upstream stream"):
            async for chunk in upstream.aiter_raw():
                yield chunk
    finally:
        await upstream.aclose()


@router.api_route("/{path:path}", methods=PROXY_METHODS, dependencies=[Depends(require_key)],
                  summary="Forward any other request to the upstream")
async def proxy(path: str, request: Request, runtime: Runtime = Depends(get_runtime)) -> WatchedStreamingResponse:
    if request.url.path in request.app.state.own_paths:
        raise HTTPException(405, f"method {request.method} not allowed on {request.url.path}")
    if not runtime.upstream_url:
        raise UpstreamUnavailable("no upstream is configured")
    scanner = StreamFlagScanner(request.stream()) if _has_body(request) else None
    outgoing = runtime.http.build_request(
        request.method,
        upstream_target(runtime.upstream_url, request),
        headers=forward_request_headers(request, runtime),
        content=scanner.__aiter__() if scanner else None,
    )
    started = time.perf_counter()
    with upstream_errors():
        upstream = await runtime.http.send(outgoing, stream=True)
    request.scope["ghost.upstream_ms"] = round((time.perf_counter() - started) * 1000, 2)
    content_type = upstream.headers.get("content-type", "")
    streaming = (scanner is not None and scanner.streaming) or content_type.startswith(_STREAMING_TYPES)
    return WatchedStreamingResponse(
        _relay(upstream),
        status_code=upstream.status_code,
        headers=forward_response_headers(upstream, streaming),
    )
