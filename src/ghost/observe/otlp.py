"""Ghost's OTLP/HTTP span exporter: the SDK's own exporter (so every `OTEL_EXPORTER_OTLP_*`
setting it reads — endpoints, headers, timeout, compression, certificates — and its retries stay
the SDK's) with the batch encoded by `encode_spans` below instead of the SDK's encoder.

Why: the SDK's encoder builds a tree of protobuf message objects from Python for every span
(~85–100 µs a span even with the `upb` backend), on the batch processor's thread but holding the
GIL the event loop needs. The wire format of an `ExportTraceServiceRequest` is simple, so this
writes the same bytes' meaning directly (~15 µs a span); the tests parse what it writes with the
official OTLP proto classes and compare it with the SDK's encoding of the same spans.

Imported only with tracing on (it imports the SDK and its exporter).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from ghost.observe.metrics import CounterFamily

log = logging.getLogger("ghost.observe")

# Field numbers and wire types: opentelemetry/proto/trace/v1/trace.proto, common/v1/common.proto,
# resource/v1/resource.proto, collector/trace/v1/trace_service.proto. A tag byte is
# (field number << 3) | wire type; wire types: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32.
_LEN, _VARINT, _FIXED64 = 2, 0, 1
_SPAN_KINDS = {SpanKind.INTERNAL: 1, SpanKind.SERVER: 2, SpanKind.CLIENT: 3, SpanKind.PRODUCER: 4,
               SpanKind.CONSUMER: 5}  # the SDK's kind -> OTLP's Span.SpanKind
_FLAGS_HAS_IS_REMOTE, _FLAGS_IS_REMOTE = 0x100, 0x200
_SMALL = [bytes((n,)) for n in range(128)]
_Q, _I, _D = struct.Struct("<Q").pack, struct.Struct("<I").pack, struct.Struct("<d").pack
# Encoded attribute fields by (tag, key, value), and encoded keys, for what repeats on every span:
# bounded in entries and in the length of what is kept (`_attributes`).
_PAIR_CACHE_MAX, _PAIR_CACHE_VALUE_MAX = 4096, 128
_fields: dict[tuple[bytes, str, Any], bytes] = {}
_keys: dict[str, bytes] = {}
_names: dict[str, bytes] = {}


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n] if n >= 0 else _varint(n & 0xFFFFFFFFFFFFFFFF)  # int64: two's complement
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tag(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag, the payload's length, the payload."""
    return tag + _varint(len(payload)) + payload


# Strings go out as UTF-8 with a lone surrogate (no character, and no UTF-8 can carry it) as "?":
# OTLP's strings must be valid UTF-8, and a receiver refuses the whole batch over one bad byte.


def _text(tag: bytes, text: str) -> bytes:
    return _field(tag, text.encode("utf-8", "replace")) if text else b""


# The tags used below, by message.
_REQ_RESOURCE_SPANS = _tag(1, _LEN)
_RS_RESOURCE, _RS_SCOPE_SPANS, _RS_SCHEMA = _tag(1, _LEN), _tag(2, _LEN), _tag(3, _LEN)
_RESOURCE_ATTRIBUTES = _tag(1, _LEN)
_SS_SCOPE, _SS_SPANS, _SS_SCHEMA = _tag(1, _LEN), _tag(2, _LEN), _tag(3, _LEN)
_SCOPE_NAME, _SCOPE_VERSION, _SCOPE_ATTRIBUTES = _tag(1, _LEN), _tag(2, _LEN), _tag(3, _LEN)
_SPAN_TRACE_ID, _SPAN_ID, _SPAN_STATE, _SPAN_PARENT = _tag(1, _LEN), _tag(2, _LEN), _tag(3, _LEN), _tag(4, _LEN)
_SPAN_NAME, _SPAN_KIND, _SPAN_START, _SPAN_END = _tag(5, _LEN), _tag(6, _VARINT), _tag(7, _FIXED64), _tag(8, _FIXED64)
_SPAN_ATTRIBUTES, _SPAN_DROPPED_ATTRIBUTES = _tag(9, _LEN), _tag(10, _VARINT)
_SPAN_EVENTS, _SPAN_DROPPED_EVENTS, _SPAN_LINKS, _SPAN_DROPPED_LINKS = (
    _tag(11, _LEN), _tag(12, _VARINT), _tag(13, _LEN), _tag(14, _VARINT))
_SPAN_STATUS, _SPAN_FLAGS = _tag(15, _LEN), _tag(16, 5)
_STATUS_MESSAGE, _STATUS_CODE = _tag(2, _LEN), _tag(3, _VARINT)
_EVENT_TIME, _EVENT_NAME, _EVENT_ATTRIBUTES, _EVENT_DROPPED = _tag(1, _FIXED64), _tag(2, _LEN), _tag(3, _LEN), _tag(4, _VARINT)
_LINK_TRACE_ID, _LINK_SPAN_ID, _LINK_ATTRIBUTES, _LINK_DROPPED, _LINK_FLAGS = (
    _tag(1, _LEN), _tag(2, _LEN), _tag(4, _LEN), _tag(5, _VARINT), _tag(6, 5))
_KV_KEY, _KV_VALUE = _tag(1, _LEN), _tag(2, _LEN)
_ANY_STRING, _ANY_BOOL, _ANY_INT, _ANY_DOUBLE = _tag(1, _LEN), _tag(2, _VARINT), _tag(3, _VARINT), _tag(4, _FIXED64)
_ANY_ARRAY, _ANY_KVLIST, _ANY_BYTES = _tag(5, _LEN), _tag(6, _LEN), _tag(7, _LEN)
_LIST_VALUES = _tag(1, _LEN)  # ArrayValue.values and KeyValueList.values alike


def _any_value(value: Any) -> bytes:
    """An `AnyValue` message's body. A oneof member is written even when it is its zero value."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return _ANY_BOOL + (b"\x01" if value else b"\x00")
    if isinstance(value, str):
        return _field(_ANY_STRING, value.encode("utf-8", "replace"))
    if isinstance(value, int):
        return _ANY_INT + _varint(value)
    if isinstance(value, float):
        return _ANY_DOUBLE + _D(value)
    if isinstance(value, bytes):
        return _field(_ANY_BYTES, value)
    if isinstance(value, Sequence):
        return _field(_ANY_ARRAY, b"".join([_field(_LIST_VALUES, _any_value(v)) for v in value]))
    if isinstance(value, Mapping):
        return _field(_ANY_KVLIST, b"".join([_field(_LIST_VALUES, _key_value(str(k), v)) for k, v in value.items()]))
    raise TypeError(f"an attribute value of type {type(value).__name__} has no OTLP encoding")


def _key_value(key: str, value: Any) -> bytes:
    return _text(_KV_KEY, key) + _field(_KV_VALUE, _any_value(value))


def _cacheable(value: Any) -> bool:
    """Whether `value`'s encoding may be kept by (key, value): a short string, a bool, or a short
    tuple of short strings (a chat span's finish reasons). The type is part of the rule: True and
    1, or (True,) and (1,), are equal as dict keys, not on the wire."""
    kind = type(value)
    if kind is str:
        return len(value) <= _PAIR_CACHE_VALUE_MAX
    if kind is bool:
        return True
    if kind is tuple and len(value) <= 8:
        for item in value:
            if type(item) is not str or len(item) > _PAIR_CACHE_VALUE_MAX:
                return False
        return True
    return False


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    """The attributes as `tag` fields, each a `KeyValue`. The whole field is kept for the values
    that repeat on every span (the operation's name, the model, the agent, a finish reason;
    bounded in entries and in the length of what is kept), and an int's written without the
    general path's calls (token counts): most of a span's encoding time was here."""
    if not attributes:
        return b""
    parts = []
    for key, value in attributes.items():
        try:
            if type(value) is int:
                if (key_part := _keys.get(key)) is None:
                    key_part = _text(_KV_KEY, key)
                    if len(_keys) < _PAIR_CACHE_MAX and len(key) <= _PAIR_CACHE_VALUE_MAX:
                        _keys[key] = key_part
                number = _ANY_INT + _varint(value)
                body = key_part + _KV_VALUE + _SMALL[len(number)] + number  # an int's AnyValue: < 12 bytes
                parts.append(tag + _SMALL[len(body)] + body if len(body) < 0x80 else _field(tag, body))
            elif _cacheable(value):
                if (field := _fields.get((tag, key, value))) is None:
                    field = _field(tag, _key_value(key, value))
                    if len(_fields) < _PAIR_CACHE_MAX:
                        _fields[(tag, key, value)] = field
                parts.append(field)
            else:
                parts.append(_field(tag, _key_value(key, value)))
        except Exception:  # one bad value costs its attribute, not the batch (as the SDK's encoder)
            log.exception("an attribute %r could not be encoded for OTLP", key)
    return b"".join(parts)


def _count(tag: bytes, n: int) -> bytes:
    return tag + _varint(n) if n else b""


def _flags(parent: Any) -> bytes:
    flags = _FLAGS_HAS_IS_REMOTE | (_FLAGS_IS_REMOTE if parent is not None and parent.is_remote else 0)
    return _I(flags)


def _span(span: ReadableSpan) -> bytes:
    context = span.get_span_context()
    parent = span.parent
    status = span.status
    parts = [_SPAN_TRACE_ID, b"\x10", context.trace_id.to_bytes(16, "big"),
             _SPAN_ID, b"\x08", context.span_id.to_bytes(8, "big")]
    if context.trace_state:
        parts.append(_text(_SPAN_STATE, ",".join(f"{k}={v}" for k, v in context.trace_state.items())))
    if parent is not None:
        parts += (_SPAN_PARENT, b"\x08", parent.span_id.to_bytes(8, "big"))
    if (name := _names.get(span.name)) is None:  # a handful of names: "chat <model>", "POST <route>"
        name = _text(_SPAN_NAME, span.name)
        if len(_names) < _PAIR_CACHE_MAX and len(span.name) <= _PAIR_CACHE_VALUE_MAX:
            _names[span.name] = name
    parts.append(name)
    parts.append(_KIND_FIELDS[id(span.kind)])  # by identity: an Enum's hash is a Python call
    if span.start_time:
        parts += (_SPAN_START, _Q(span.start_time))
    if span.end_time:
        parts += (_SPAN_END, _Q(span.end_time))
    parts.append(_attributes(_SPAN_ATTRIBUTES, span.attributes))
    if span.dropped_attributes:
        parts.append(_count(_SPAN_DROPPED_ATTRIBUTES, span.dropped_attributes))
    for event in span.events:
        parts.append(_field(_SPAN_EVENTS, b"".join((
            _EVENT_TIME + _Q(event.timestamp) if event.timestamp else b"", _text(_EVENT_NAME, event.name),
            _attributes(_EVENT_ATTRIBUTES, event.attributes), _count(_EVENT_DROPPED, event.dropped_attributes)))))
    if span.dropped_events:
        parts.append(_count(_SPAN_DROPPED_EVENTS, span.dropped_events))
    for link in span.links:
        parts.append(_field(_SPAN_LINKS, b"".join((
            _LINK_TRACE_ID, b"\x10", link.context.trace_id.to_bytes(16, "big"),
            _LINK_SPAN_ID, b"\x08", link.context.span_id.to_bytes(8, "big"),
            _attributes(_LINK_ATTRIBUTES, link.attributes), _count(_LINK_DROPPED, link.dropped_attributes),
            _LINK_FLAGS, _flags(link.context)))))
    if span.dropped_links:
        parts.append(_count(_SPAN_DROPPED_LINKS, span.dropped_links))
    if status is not None:
        parts.append(_STATUS_FIELDS[id(status.status_code)] if not status.description else _status(status))
    parts.append(_SPAN_REMOTE_PARENT if parent is not None and parent.is_remote else _SPAN_LOCAL_PARENT)
    return b"".join(parts)


def _status(status: Any) -> bytes:
    return _field(_SPAN_STATUS, _text(_STATUS_MESSAGE, status.description or "")
                  + _count(_STATUS_CODE, status.status_code.value))


_KIND_FIELDS = {id(kind): _SPAN_KIND + _SMALL[number] for kind, number in _SPAN_KINDS.items()}
_SPAN_LOCAL_PARENT, _SPAN_REMOTE_PARENT = _SPAN_FLAGS + _flags(None), _SPAN_FLAGS + _I(_FLAGS_HAS_IS_REMOTE | _FLAGS_IS_REMOTE)
_STATUS_FIELDS = {id(code): _status(Status(code)) for code in StatusCode}


def _scope(scope: Any) -> bytes:
    if scope is None:
        return b""
    return (_text(_SCOPE_NAME, scope.name) + _text(_SCOPE_VERSION, scope.version or "")
            + _attributes(_SCOPE_ATTRIBUTES, scope.attributes))


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """The serialized `ExportTraceServiceRequest` of `spans`: grouped by resource, then by
    instrumentation scope, as the OTLP data model nests them."""
    # Grouped by identity: a provider's spans share its one resource and its tracers' scopes.
    groups: dict[int, tuple[Any, dict[int, tuple[Any, list[bytes]]]]] = {}
    for span in spans:
        resource, scope = span.resource, span.instrumentation_scope
        scopes = groups.setdefault(id(resource), (resource, {}))[1]
        scopes.setdefault(id(scope), (scope, []))[1].append(_field(_SS_SPANS, _span(span)))
    out = []
    for resource, scopes in groups.values():
        scope_spans = [_field(_RS_SCOPE_SPANS, _field(_SS_SCOPE, _scope(scope)) + b"".join(encoded)
                                + _text(_SS_SCHEMA, getattr(scope, "schema_url", "") or ""))
                       for scope, encoded in scopes.values()]
        body = (_field(_RS_RESOURCE, _attributes(_RESOURCE_ATTRIBUTES, resource.attributes))
                + b"".join(scope_spans) + _text(_RS_SCHEMA, resource.schema_url or ""))
        out.append(_field(_REQ_RESOURCE_SPANS, body))
    return b"".join(out)


class GhostSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP exporter, its batches encoded by `encode_spans`.

    Only the encoding is Ghost's: the request (endpoint, headers, compression, timeout, TLS,
    retries with backoff) is made by the SDK exporter's own HTTP client. Should a version of the
    SDK lay its exporter out differently, this falls back to the SDK's whole export (slower, never
    broken); `fast` says which runs, and a test checks it is the fast one with the pinned SDK."""

    def __init__(self, *args: Any, counted: CounterFamily | None = None, **kwargs: Any) -> None:
        """`counted` (label `outcome`: ok, failed): every batch's spans are counted into it once
        the collector has answered (or not)."""
        super().__init__(*args, **kwargs)
        self.counted = counted
        client = getattr(self, "_client", None)
        self.fast = callable(getattr(client, "export", None)) and isinstance(getattr(self, "_shutdown", None), bool)
        if not self.fast:
            log.warning("this OpenTelemetry SDK's OTLP exporter is laid out differently: spans are encoded by the SDK")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self._send(spans) if self.fast else super().export(spans)
        if self.counted is not None:
            self.counted.inc(("ok",) if result is SpanExportResult.SUCCESS else ("failed",), len(spans))
        return result

    def _send(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        try:
            body = encode_spans(spans)
        except Exception:
            log.exception("a batch of %d spans could not be encoded for OTLP", len(spans))
            return SpanExportResult.FAILURE
        limit = getattr(self, "_max_request_size", 0) or 0
        if 0 < limit < len(body):
            log.warning("a batch of %d spans (%d bytes) is over the exporter's request size limit: dropped",
                        len(spans), len(body))
            return SpanExportResult.FAILURE
        result = self._client.export(body)
        return SpanExportResult.SUCCESS if result.success else SpanExportResult.FAILURE
