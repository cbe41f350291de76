"""Ghost's own recording span, made and ended as the OpenTelemetry SDK's tracer would make and end
one, for a fraction of its cost on the event loop.

Why not the SDK's span: each of its spans keeps its attributes in a `BoundedAttributes` (a lock
per call, every value cleaned through several calls), takes its own lock for every change, wraps
its parent and links in bounded lists, and copies itself into a `ReadableSpan` at its end — about
60–80 µs a span on the event loop (Ghost's: ~16 µs), where Ghost makes 3–5 spans for every turn.
`RecordedSpan` is a plain record with the same meaning (the same limits, cleaning, status and end
rules) and the fields a `ReadableSpan` has, so the exporter's encoder reads it as it reads the
SDK's.

What stays the SDK's, unchanged: the decisions and the settings. A `TracerProvider` is made for its
configuration only (it never makes a span here): its sampler (`OTEL_TRACES_SAMPLER`/`_ARG`) decides
every span (each standard one by its fixed rule, applied here), its id generator makes the
ids; `SpanLimits` reads the `OTEL_*_LIMIT` variables; `Resource` reads `OTEL_RESOURCE_ATTRIBUTES`; the `BatchSpanProcessor`
(`OTEL_BSP_*`: a bounded queue that drops and logs when full, never blocking; one thread exporting
in batches; a flush at shutdown) takes each ended span; the OTLP/HTTP exporter (`ghost.observe.otlp`)
sends it. The OTel API's context, `traceparent` propagation and `get_current_span` see these spans
as any other `opentelemetry.trace.Span`.

A span is changed by one thread at a time (Ghost's observers all run on the event loop) and read by
the export thread only once ended; that is why it needs no lock.

Imported only with tracing on (it imports the SDK).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Mapping
from time import time_ns
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes, _clean_attribute_value
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

if TYPE_CHECKING:
    from ghost.observe.metrics import CounterFamily

log = logging.getLogger("ghost.observe")
_STATUSES = {code: Status(code) for code in StatusCode}
_FLAGS = {(sampled, random_id): TraceFlags((TraceFlags.SAMPLED if sampled else 0)
                                            | (TraceFlags.RANDOM_TRACE_ID if random_id else 0))
          for sampled in (False, True) for random_id in (False, True)}
_NO_EVENTS: tuple[Event, ...] = ()


def _plain_strings(value: tuple[Any, ...], max_length: int | None) -> bool:
    """True for a tuple of strings none of which is over the length limit: the API's cleaning
    gives such a tuple back unchanged (it checks each value's type and cuts long strings)."""
    for item in value:
        if type(item) is not str or (max_length is not None and len(item) > max_length):
            return False
    return True


class SpanMaker:
    """Starts an app's spans (each app has its own: two apps in one process keep their spans
    apart) and hands each ended one to the app's batch processor."""

    def __init__(self, resource: Resource, scope: InstrumentationScope, exporter: SpanExporter,
                 ended: CounterFamily | None = None, sampler: Sampler | None = None) -> None:
        """`ended`: counts the sampled spans handed on.
        `sampler`: None for the one the standard variables name (as the SDK reads them)."""
        # The SDK's provider, for its configuration: the sampler and id generator it reads from
        # the environment (no processor: it never makes or exports a span).
        self.provider = TracerProvider(resource=resource, shutdown_on_exit=False, sampler=sampler)
        self.sampler, self.ids = self.provider.sampler, self.provider.id_generator
        self.rule = fixed_rule(self.sampler)
        self.resource, self.scope = resource, scope
        self.limits = SpanLimits()
        self.max_attributes = self.limits.max_span_attributes
        self.max_length = self.limits.max_span_attribute_length
        self.processor = BatchSpanProcessor(exporter)
        self.ended = ended
        self._random_root = self.ids.is_trace_id_random()

    def start(self, name: str, kind: SpanKind, attributes: Mapping[str, Any],
              parent: Context | None = None) -> trace.Span:
        """A started span, the child of the span current in `parent` (or now, when None)."""
        parent_context: SpanContext | None = trace.get_current_span(parent).get_span_context()
        if parent_context.is_valid:
            trace_id, random_id = parent_context.trace_id, parent_context.trace_flags.random_trace_id
        else:
            parent_context, trace_id, random_id = None, self.ids.generate_trace_id(), self._random_root
        sampled, recording, trace_state, attributes = self._decide(parent, parent_context, trace_id, name, kind,
                                                                   attributes)
        context = SpanContext(trace_id, self.ids.generate_span_id(), False, _FLAGS[sampled, random_id], trace_state)
        if not recording:
            return NonRecordingSpan(context)
        return RecordedSpan(self, name, context, parent_context, kind, attributes)

    def _decide(self, parent: Context | None, parent_context: SpanContext | None, trace_id: int, name: str,
                kind: SpanKind, attributes: Mapping[str, Any]) -> tuple[bool, bool, Any, Mapping[str, Any]]:
        """The sampler's decision: sampled, recording, the trace state, the attributes to start with."""
        if self.rule is not None:
            # A standard sampler: its fixed rule applied here as it applies it, without its
            # per-call result objects (a test holds the two equal for every standard sampler).
            sampled = self.rule(parent_context, trace_id)
            return sampled, sampled, parent_context.trace_state if parent_context is not None else None, attributes
        result = self.sampler.should_sample(parent, trace_id, name, kind, attributes)
        return result.decision.is_sampled(), result.decision.is_recording(), result.trace_state, result.attributes

    def force_flush(self) -> bool:
        return self.processor.force_flush()

    def shutdown(self) -> None:
        """Export what is queued, then stop (blocking)."""
        self.processor.shutdown()


Rule = Callable[[SpanContext | None, int], bool]
_PARENT_BASED_DELEGATES = ("_root", "_remote_parent_sampled", "_remote_parent_not_sampled", "_local_parent_sampled",
                           "_local_parent_not_sampled")


def fixed_rule(sampler: Sampler) -> Rule | None:
    """`sampled(parent, trace_id)` (`parent`: a valid parent's context, else None) for the SDK's
    samplers whose rule is fixed — every one `OTEL_TRACES_SAMPLER` can name: always on, always
    off, the trace id ratio, and parent based on those. Such a sampler records exactly what it
    samples and passes the parent's trace state on. None for any other sampler (it is then asked
    for every span), and for a parent-based one an SDK lays out differently."""
    if sampler is ALWAYS_ON:
        return lambda parent, trace_id: True
    if sampler is ALWAYS_OFF:
        return lambda parent, trace_id: False
    if type(sampler) is TraceIdRatioBased:
        bound, mask = sampler.bound, TraceIdRatioBased.TRACE_ID_LIMIT
        return lambda parent, trace_id: trace_id & mask < bound
    if not isinstance(sampler, ParentBased) or type(sampler).should_sample is not ParentBased.should_sample:
        return None
    rules = [fixed_rule(getattr(sampler, name, None)) for name in _PARENT_BASED_DELEGATES]  # type: ignore[arg-type]
    if any(rule is None for rule in rules):
        return None
    root, remote_sampled, remote_unsampled, local_sampled, local_unsampled = rules
    assert root is not None and remote_sampled is not None and remote_unsampled is not None
    assert local_sampled is not None and local_unsampled is not None
    if [getattr(sampler, name) for name in _PARENT_BASED_DELEGATES[1:]] == [ALWAYS_ON, ALWAYS_OFF, ALWAYS_ON, ALWAYS_OFF]:
        return lambda parent, trace_id: root(None, trace_id) if parent is None else parent.trace_flags.sampled

    def parent_based(parent: SpanContext | None, trace_id: int) -> bool:
        if parent is None:
            return root(None, trace_id)
        if parent.is_remote:
            return (remote_sampled if parent.trace_flags.sampled else remote_unsampled)(parent, trace_id)
        return (local_sampled if parent.trace_flags.sampled else local_unsampled)(parent, trace_id)

    return parent_based


class RecordedSpan(trace.Span):
    """A sampled span: a plain record until its end, then the batch processor's.

    Read as a `ReadableSpan` by the exporter (the same field names): `name`, `context`, `parent`,
    `kind`, `start_time`, `end_time`, `attributes`, `status`, `events`, `links`, the dropped
    counts, `resource`, `instrumentation_scope`."""

    __slots__ = ("_maker", "name", "context", "parent", "kind", "start_time", "end_time", "attributes",
                 "dropped_attributes", "status", "events", "dropped_events")
    links: tuple[Any, ...] = ()
    dropped_links = 0

    def __init__(self, maker: SpanMaker, name: str, context: SpanContext, parent: SpanContext | None,
                 kind: SpanKind, attributes: Mapping[str, Any]) -> None:
        self._maker = maker
        self.name, self.context, self.parent, self.kind = name, context, parent, kind
        self.start_time: int = time_ns()
        self.end_time: int | None = None
        self.attributes: dict[str, Any] = {}
        self.dropped_attributes = 0
        self.status = _STATUSES[StatusCode.UNSET]
        self.events: tuple[Event, ...] | list[Event] = _NO_EVENTS
        self.dropped_events = 0
        if attributes:
            self._set(attributes)

    @property
    def resource(self) -> Resource:
        return self._maker.resource

    @property
    def instrumentation_scope(self) -> InstrumentationScope:
        return self._maker.scope

    def get_span_context(self) -> SpanContext:
        return self.context

    def is_recording(self) -> bool:
        return self.end_time is None

    def set_attribute(self, key: str, value: Any) -> None:
        if self._open("set an attribute on"):
            self._set({key: value})

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self._open("set attributes on"):
            self._set(attributes)

    def _set(self, attributes: Mapping[str, Any]) -> None:
        """Cleaned and bounded as the SDK's `BoundedAttributes` does: a string cut at the length
        limit, any value not a plain string, number or bool through the API's own cleaning (a
        sequence becomes a tuple); at the count limit the oldest attribute makes room (and is
        counted as dropped)."""
        mine, limit, max_length = self.attributes, self._maker.max_attributes, self._maker.max_length
        for key, value in attributes.items():
            if not key or type(key) is not str:
                log.warning("invalid span attribute key %r: dropped", key)
                self.dropped_attributes += 1
                continue
            kind = type(value)
            if kind is str:
                if max_length is not None and len(value) > max_length:
                    value = value[:max_length]
            elif kind is tuple and _plain_strings(value, max_length):
                pass  # what the cleaning would return (a chat span's finish reasons): kept as it is
            elif kind is not int and kind is not bool and kind is not float:
                value = _clean_attribute_value(value, max_length)
            if key in mine:
                del mine[key]
            elif limit is not None and len(mine) >= limit:
                self.dropped_attributes += 1
                if not mine:  # a limit of 0
                    continue
                del mine[next(iter(mine))]
            mine[key] = value

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None,
                  timestamp: int | None = None) -> None:
        if not self._open("add an event to"):
            return
        limits = self._maker.limits
        bounded = BoundedAttributes(limits.max_event_attributes, attributes, immutable=True,
                                    max_value_len=limits.max_attribute_length)
        if self.events is _NO_EVENTS:
            self.events = []
        events = self.events
        assert isinstance(events, list)
        if limits.max_events is not None and len(events) >= limits.max_events:
            self.dropped_events += 1
            if not events:
                return
            events.pop(0)
        events.append(Event(name, bounded, timestamp if timestamp is not None else time_ns()))

    def record_exception(self, exception: BaseException, attributes: Mapping[str, Any] | None = None,
                         timestamp: int | None = None, escaped: bool = False) -> None:
        kind = type(exception)
        named = kind.__qualname__ if kind.__module__ in ("builtins", "") else f"{kind.__module__}.{kind.__qualname__}"
        described = {"exception.type": named, "exception.message": str(exception),
                     "exception.stacktrace": "".join(traceback.format_exception(exception)),
                     "exception.escaped": str(escaped), **(attributes or {})}
        self.add_event("exception", described, timestamp)

    def update_name(self, name: str) -> None:
        if self._open("rename"):
            self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if not self._open("set the status of") or self.status.status_code is StatusCode.OK:
            return  # OK is final, as the specification says
        if isinstance(status, Status):
            self.status = status
        elif description and status is StatusCode.ERROR:
            self.status = Status(status, description)
        else:
            self.status = _STATUSES[status]

    def end(self, end_time: int | None = None) -> None:
        if not self._open("end"):
            return
        self.end_time = end_time if end_time is not None else time_ns()
        self.events = tuple(self.events)
        self.attributes = MappingProxyType(self.attributes)  # type: ignore[assignment]  # read-only now
        maker = self._maker
        maker.processor.on_end(self)  # type: ignore[arg-type]  # read as a ReadableSpan
        if maker.ended is not None and self.context.trace_flags.sampled:  # what the processor queues
            maker.ended.inc()

    def _open(self, doing: str) -> bool:
        if self.end_time is None:
            return True
        log.warning("tried to %s the ended span %r", doing, self.name)
        return False

    def __repr__(self) -> str:
        return f"RecordedSpan({self.name!r}, trace_id={self.context.trace_id:032x}, span_id={self.context.span_id:016x})"

