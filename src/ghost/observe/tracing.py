"""OpenTelemetry traces: off unless an OTLP endpoint is configured (the standard `OTEL_*`
variables, read once at start by `ghost.config.TraceSettings`).

With tracing off nothing here touches the SDK: `Tracing.enabled` is false, the SDK is never
imported, and every caller checks that flag once and takes its plain path. With it on, each app
has its own span maker (`ghost.observe.spans`: Ghost's own span objects, decided, batched and
exported by the SDK's parts; never the process-wide provider: two apps in one process keep their
own spans apart), exporting over OTLP/HTTP in batches (`ghost.observe.otlp`: the SDK's exporter
with Ghost's faster encoder).

W3C trace context crosses Ghost both ways: an incoming `traceparent` is the parent of the request's
span; `outgoing_headers` gives the `traceparent` of whatever span is current for the upstream
and MCP requests Ghost makes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ghost import __version__
from ghost.config import TraceSettings

if TYPE_CHECKING:
    from ghost.observe.metrics import Metrics

log = logging.getLogger("ghost.observe")
_PROPAGATOR = TraceContextTextMapPropagator()
Span = trace.Span
Context = otel_context.Context


class Tracing:
    def __init__(self, settings: TraceSettings | None = None, metrics: Metrics | None = None) -> None:
        """`metrics` (a `ghost.observe.metrics.Metrics`): where the spans queued and exported are counted."""
        settings = settings or TraceSettings()
        self.enabled = settings.enabled
        # Content on spans (ghost.observe.content): only when asked for, bounded per attribute.
        self.captures_content = settings.captures_content
        self.content_max_chars = settings.trace_content_max_chars
        self._spans: Any = None  # a `ghost.observe.spans.SpanMaker` with tracing on
        if self.enabled:
            self._start(settings, metrics)

    def _start(self, settings: TraceSettings, metrics: Metrics | None) -> None:
        from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        from ghost.observe.otlp import GhostSpanExporter
        from ghost.observe.spans import SpanMaker

        resource = Resource.create({SERVICE_NAME: settings.service_name, SERVICE_VERSION: __version__})
        exporter = GhostSpanExporter(counted=metrics.trace_spans_exported if metrics is not None else None)
        self._spans = SpanMaker(resource, InstrumentationScope("ghost", __version__), exporter,
                                ended=metrics.trace_spans_ended if metrics is not None else None)
        log.info("tracing on: spans go to the OTLP/HTTP endpoint of the OTEL_* settings")

    @property
    def provider(self) -> Any:
        """This app's own span maker (None with tracing off)."""
        return self._spans

    def shutdown(self) -> None:
        """Send the spans still queued (blocking: call it off the event loop)."""
        if self._spans is not None:
            self._spans.shutdown()

    def start_span(self, name: str, kind: trace.SpanKind, attributes: dict[str, Any],
                   parent: Context | None = None) -> tuple[Span, Context]:
        """A started span and the context that has it as the current span."""
        span = self._spans.start(name, kind, attributes, parent) if self._spans is not None else trace.INVALID_SPAN
        return span, trace.set_span_in_context(span, parent)


def incoming_context(headers: Iterable[tuple[bytes, bytes]]) -> Context:
    """The caller's trace context from its `traceparent`/`tracestate` (empty if none or invalid)."""
    carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in headers
               if name in (b"traceparent", b"tracestate")}
    if "traceparent" not in carrier:
        return Context()  # what the propagator gives without one, for one look at each header
    return _PROPAGATOR.extract(carrier)


def outgoing_headers() -> dict[str, str]:
    """`traceparent` (and `tracestate`) of the current span; empty when no span is recording —
    always so with tracing off, as nothing then starts one.

    Written as the W3C propagator (`TraceContextTextMapPropagator.inject`) writes them — a test
    holds the two equal — without its carrier and setter calls: every upstream and MCP request of
    a traced turn asks for them."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return {}
    headers = {"traceparent": f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-"
                              f"{span_context.trace_flags:02x}"}
    if span_context.trace_state:
        headers["tracestate"] = span_context.trace_state.to_header()
    return headers


def trace_id_of(span: Span) -> str:
    return format(span.get_span_context().trace_id, "032x")


def fail(span: Span, error_type: str, pending: dict[str, Any] | None = None) -> None:
    """Mark `span` failed with `error_type`; the attribute goes into `pending` when given (the
    attributes its caller sets in one call at the span's end), else onto the span now."""
    if pending is not None:
        pending["error.type"] = error_type
    else:
        span.set_attribute("error.type", error_type)
    span.set_status(trace.StatusCode.ERROR)


END: Any = object()  # what `anext(iterator, END)` gives at an iterator's end
