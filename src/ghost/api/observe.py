"""HTTP requests observed: counted by route template, timed, and (with tracing on) each in a server
span whose parent is the caller's `traceparent`.

Pure ASGI, installed just inside the request-id middleware: it sees every request, the ones the
boundary refuses included, and the status the client got. The `route` label is the template of the
route that served the request (never the raw path): the catch-all proxy is `proxy`, a request no
route took (refused before routing) `unmatched` — so the label set is the route table's size.
"""

from __future__ import annotations

import re
import time

from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ghost.observe.metrics import method_label
from ghost.observe.telemetry import Telemetry
from ghost.observe.tracing import incoming_context, trace_id_of

PROXY_ROUTE = "proxy"
UNMATCHED_ROUTE = "unmatched"
ROUTE_SCOPE_KEY = "ghost.route"  # set by a handler that serves many paths as one (the proxy)
TRACE_SCOPE_KEY = "ghost.trace_id"  # for the access log
# The workspace's transfer routes, counted as operations as well as requests.
_TRACEPARENT = re.compile(rb"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
WORKSPACE_OPERATIONS = {"/api/workspace/save": "save", "/api/workspace/load": "load",
                        "/api/upload": "upload", "/api/download/{filename:anypath}": "download"}


def route_label(scope: Scope) -> str:
    """The route template that served the request, `proxy`, or `unmatched`."""
    if (label := scope.get(ROUTE_SCOPE_KEY)) is not None:
        return label
    path = getattr(scope.get("route"), "path", None)
    if path is None:
        return UNMATCHED_ROUTE
    return PROXY_ROUTE if path.startswith("/{path") else path


class _StatusSend:
    """`send`, noting the status the client got (0 while none was sent)."""

    __slots__ = ("send", "status")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)


class ObserveMiddleware:
    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.metrics = telemetry.metrics
        self.tracing = telemetry.tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.tracing.enabled:
            await self._traced(scope, receive, send)
            return
        if trace_id := _incoming_trace_id(scope["headers"]):
            scope[TRACE_SCOPE_KEY] = trace_id
        sent = _StatusSend(send)
        started = time.perf_counter()
        try:
            await self.app(scope, receive, sent)
        finally:
            self._count(scope, sent.status, time.perf_counter() - started)

    async def _traced(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        span, ctx = self.tracing.start_span(method, SpanKind.SERVER, {
            "http.request.method": method, "url.path": scope["path"]}, parent=incoming_context(scope["headers"]))
        scope[TRACE_SCOPE_KEY] = trace_id_of(span)
        sent = _StatusSend(send)
        started = time.perf_counter()
        token = otel_context.attach(ctx)
        try:
            await self.app(scope, receive, sent)
        finally:
            otel_context.detach(token)
            status = sent.status
            route = self._count(scope, status, time.perf_counter() - started)
            span.update_name(f"{method} {route}")
            attributes: dict[str, str | int] = {"http.route": route, "http.response.status_code": status}
            if status >= 500 or not status:
                span.set_status(StatusCode.ERROR)
                attributes["error.type"] = str(status) if status else "aborted"
            span.set_attributes(attributes)  # one call: the SDK takes its lock and checks once a call
            span.end()

    def _count(self, scope: Scope, status: int, seconds: float) -> str:
        route = route_label(scope)
        metrics = self.metrics
        metrics.http_requests.inc((route, method_label(scope["method"]), str(status or 0)))
        metrics.http_duration.observe(seconds, (route,))
        if (operation := WORKSPACE_OPERATIONS.get(route)) is not None:
            metrics.workspace_operations.inc((operation, "ok" if 0 < status < 400 else "error"))
        scope[ROUTE_SCOPE_KEY] = route
        return route


def _incoming_trace_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's trace id, for the log line, when tracing is off (the SDK is not asked)."""
    for name, value in headers:
        if name == b"traceparent":
            match = _TRACEPARENT.fullmatch(value.strip())
            trace_id = match.group(1).decode() if match else ""
            return "" if trace_id == "0" * 32 else trace_id
    return ""
