"""The upstream's reply as the client's response: whole when it is small and here, else streamed.

A transport failure in the middle of a streamed reply must never look like a clean end. For an
event stream that broke off between two events the client gets an in-band `event: error` (the
same frame Ghost's own chat streams end with) and `data: [DONE]`; for any other body the error is
raised, so the client's connection is aborted and it sees an incomplete body.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from ghost.api.encoders.openai_sse import sse_error
from ghost.api.proxy.headers import forward_response_headers, header
from ghost.api.proxy.sniff import is_event_stream, is_streaming_type
from ghost.llm.transport import UpstreamResponse
from ghost.api.streaming import WatchedStreamingResponse
from ghost.errors import UpstreamError

log = logging.getLogger("ghost.proxy")


class UpstreamRelay:
    """The upstream body as the client's response body.

    `aclose()` always closes the upstream response, even when iteration never started (a client
    gone before the first byte), so no pooled connection is ever left checked out.
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
        return sse_error(error.message, error.error_type)

    async def aclose(self) -> None:
        await self.upstream.aclose()


def client_response(request: Request, upstream: UpstreamResponse, streaming_body: bool) -> Response:
    """The response for the client; `streaming_body` is the request's own `"stream": true`."""
    content_type = header(upstream.headers, b"content-type") or b""
    streaming = streaming_body or is_streaming_type(content_type)
    headers = forward_response_headers(upstream.headers, streaming)
    body = None if streaming else upstream.read_if_complete()
    if body is not None:  # small and already here: one plain response, no streaming machinery
        response = Response(body, status_code=upstream.status)
        if header(headers, b"content-length") is None and request.method != "HEAD":
            headers.append((b"content-length", b"%d" % len(body)))
    else:
        relay = UpstreamRelay(upstream, request.url.path, event_stream=is_event_stream(content_type))
        response = WatchedStreamingResponse(relay, status_code=upstream.status)
    response.raw_headers = headers
    return response
