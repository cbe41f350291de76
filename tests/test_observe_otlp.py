"""Ghost's OTLP span encoder and exporter (`ghost.observe.otlp`): what it writes parses with the
official OTLP proto classes into exactly what the SDK's own encoder makes of the same spans, for
every field and value type a span can carry; the exporter sends it with the SDK's transport,
honouring the standard `OTEL_EXPORTER_OTLP_*` settings; each Ghost app has its own tracer provider."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from ghost.config import TraceSettings
from ghost.observe import Telemetry
from ghost.observe.otlp import GhostSpanExporter, encode_spans
from ghost.testing.otlp_receiver import OtlpReceiver

RESOURCE = Resource.create({"service.name": "ghost", "service.version": "1.2.3"})
SCOPE = InstrumentationScope("ghost", "1.2.3")
OTLP_ENV = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_COMPRESSION",
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")


def _context(trace_id: int = 0x4BF92F3577B34DA6A3CE929D0E0E4736, span_id: int = 0x00F067AA0BA902B7,
             remote: bool = False, state: TraceState | None = None) -> SpanContext:
    return SpanContext(trace_id, span_id, remote, TraceFlags(1), state)


def _span(name: str = "chat m", attributes: dict | None = None, **extra: object) -> ReadableSpan:
    fields: dict = {"context": _context(), "parent": None, "resource": RESOURCE, "instrumentation_scope": SCOPE,
                    "kind": SpanKind.INTERNAL, "start_time": 1_700_000_000_000_000_000,
                    "end_time": 1_700_000_000_123_456_789, "status": Status(StatusCode.UNSET)}
    fields.update(extra)
    return ReadableSpan(name=name, attributes=attributes, **fields)


def _same_as_the_sdk(spans: list[ReadableSpan]) -> None:
    mine = ExportTraceServiceRequest.FromString(encode_spans(spans))
    assert mine == sdk_encode_spans(spans), f"differs:\n{mine}\n---\n{sdk_encode_spans(spans)}"


@pytest.mark.parametrize("value", [
    "text", "", "ünïcødé ✓ 𝄞", True, False, 0, 1, 127, 128, 300, -1, -2**63, 2**63 - 1, 0.0, -1.5, 3.25e300,
    float("inf"), b"", b"\x00\xffbytes", None, ("a", "b"), (1, -2, 3), (True, False), (0.5,), (), ["x", "y"],
    {"k": "v", "n": 2, "nested": {"deep": (1, 2)}}, "x" * 300, "x" * 20_000,
])
def test_every_attribute_value_encodes_as_the_sdks_does(value: object) -> None:
    _same_as_the_sdk([_span(attributes={"key": value, "other": "constant"})])
    _same_as_the_sdk([_span(attributes={"key": value})])  # again: what the pair cache gave


def test_every_span_field_encodes_as_the_sdks_does() -> None:
    remote_parent = _context(span_id=0x1111111111111111, remote=True)
    local_parent = _context(span_id=0x2222222222222222)
    spans = [
        _span("invoke_agent m", {"gen_ai.operation.name": "invoke_agent"}, parent=remote_parent, kind=SpanKind.SERVER),
        _span("execute_tool x", parent=local_parent, kind=SpanKind.CLIENT,
              status=Status(StatusCode.ERROR, "it broke"), context=_context(state=TraceState([("vendor", "v1")]))),
        _span("", kind=SpanKind.PRODUCER, status=Status(StatusCode.OK)),
        _span("consumer", kind=SpanKind.CONSUMER, events=(Event("started", {"n": 1}, timestamp=5),
                                                          Event("bare", timestamp=6)),
              links=(Link(remote_parent, {"why": "retry"}), Link(local_parent))),
        _span("not ended", end_time=None, start_time=None),
        _span("other scope", instrumentation_scope=InstrumentationScope("other", None, None, {"a": 1})),
        _span("no scope", instrumentation_scope=None),
        _span("other resource", resource=Resource.create({"service.name": "another"}, "https://schema/1")),
    ]
    _same_as_the_sdk(spans)
    _same_as_the_sdk([])


def test_random_spans_encode_as_the_sdks_do() -> None:
    rng = random.Random(26)
    values = [lambda: rng.choice(["", "a", "model-x", "ü" * rng.randint(1, 40)]), lambda: rng.randint(-2**63, 2**63 - 1),
              lambda: rng.randint(0, 1000), lambda: rng.random() * 1e6, lambda: rng.random() < 0.5,
              lambda: tuple(rng.randint(0, 9) for _ in range(rng.randint(0, 4))),
              lambda: tuple(rng.choice(["stop", "length", "ü", ""]) for _ in range(rng.randint(0, 3))),
              # equal as dict keys, not on the wire: the encoder's caches must keep them apart
              lambda: rng.choice([True, 1, 1.0, (True,), (1,), ("1",), "1", False, 0, (False,), (0,)])]
    for _ in range(40):
        spans = []
        for _ in range(rng.randint(1, 30)):
            attributes = {f"k{rng.randint(0, 9)}": rng.choice(values)() for _ in range(rng.randint(0, 8))}
            parent = _context(span_id=rng.getrandbits(64) or 1, remote=rng.random() < 0.3) if rng.random() < 0.7 else None
            spans.append(_span(f"span {rng.randint(0, 99)}", attributes, parent=parent,
                               kind=rng.choice(list(SpanKind)), start_time=rng.getrandbits(63),
                               end_time=rng.getrandbits(63),
                               context=_context(rng.getrandbits(128) or 1, rng.getrandbits(64) or 1),
                               status=Status(rng.choice(list(StatusCode)))))
        _same_as_the_sdk(spans)


def test_values_equal_as_keys_but_not_on_the_wire_keep_their_own_encoding() -> None:
    for value in (True, 1, 1.0, (True,), (1,), (1.0,), ("1",), True, (True,)):  # each after the others, cached
        _same_as_the_sdk([_span(attributes={"same key": value})])
    long_key = "k" * 200  # an int's KeyValue over 127 bytes: its length takes two bytes
    _same_as_the_sdk([_span(attributes={long_key: 2**63 - 1, "n": -1})])


def test_a_value_with_no_encoding_costs_its_attribute_only() -> None:
    mine = ExportTraceServiceRequest.FromString(encode_spans([_span(attributes={"bad": object(), "good": 1})]))
    assert mine == sdk_encode_spans([_span(attributes={"good": 1})])


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    sink = OtlpReceiver(paths=("/v1/traces", "/custom/traces")).start()
    yield sink
    sink.stop()


@pytest.fixture
def otlp_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in OTLP_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _export(spans: list[ReadableSpan]) -> bool:
    exporter = GhostSpanExporter()
    assert exporter.fast  # the SDK installed is the one Ghost's encoder is plugged into
    try:
        return exporter.export(spans).name == "SUCCESS"
    finally:
        exporter.shutdown()


def test_the_exporter_sends_to_the_standard_endpoint(receiver: OtlpReceiver, otlp_env: pytest.MonkeyPatch) -> None:
    otlp_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    assert _export([_span("one", {"gen_ai.operation.name": "chat"})])
    (path, headers), = receiver.requests
    assert path == "/v1/traces" and headers["content-type"] == "application/x-protobuf"
    (span,) = receiver.spans
    assert (span.name, span.attributes, span.resource["service.name"]) == ("one", {"gen_ai.operation.name": "chat"}, "ghost")


def test_the_exporter_honours_the_traces_endpoint_headers_and_compression(
        receiver: OtlpReceiver, otlp_env: pytest.MonkeyPatch) -> None:
    otlp_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # the traces endpoint wins
    otlp_env.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.url + "/custom/traces")
    otlp_env.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme,authorization=Bearer%20s3cret")
    otlp_env.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")
    assert _export([_span("two")])
    (path, headers), = receiver.requests
    assert path == "/custom/traces"
    assert headers["x-tenant"] == "acme" and headers["authorization"] == "Bearer s3cret"
    assert headers["content-encoding"] == "gzip"
    assert [s.name for s in receiver.spans] == ["two"]  # decoded after gunzip by the official classes


def test_a_refused_export_is_a_failure_not_an_exception(otlp_env: pytest.MonkeyPatch) -> None:
    refusing = OtlpReceiver(paths=()).start()  # every path 404: not retried, reported failed
    try:
        otlp_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", refusing.url)
        assert not _export([_span("three")])
        assert [path for path, _ in refusing.requests] == ["/v1/traces"]
    finally:
        refusing.stop()


def test_each_app_has_its_own_tracer_provider(receiver: OtlpReceiver, otlp_env: pytest.MonkeyPatch) -> None:
    otlp_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)  # what the exporter reads, as in Ghost
    global_before = trace.get_tracer_provider()
    first = Telemetry(None, TraceSettings(exporter_otlp_endpoint=receiver.url))
    second = Telemetry(None, TraceSettings(exporter_otlp_endpoint=receiver.url))
    try:
        assert first.tracing.enabled and second.tracing.enabled
        assert first.tracing.provider is not second.tracing.provider
        assert trace.get_tracer_provider() is global_before  # the process-wide provider is not set
        span, _ = first.tracing.start_span("first only", SpanKind.INTERNAL, {})
        span.end()
    finally:
        first.shutdown()
        second.shutdown()
    assert [s.name for s in receiver.spans] == ["first only"]


def test_without_the_fast_path_the_sdks_own_export_sends_the_same(receiver: OtlpReceiver,
                                                                  otlp_env: pytest.MonkeyPatch) -> None:
    otlp_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    exporter = GhostSpanExporter()
    exporter.fast = False  # as with an SDK whose exporter is laid out differently
    try:
        assert exporter.export([_span("via the sdk", {"n": 1})]).name == "SUCCESS"
    finally:
        exporter.shutdown()
    assert [(s.name, s.attributes) for s in receiver.spans] == [("via the sdk", {"n": 1})]


def test_a_lone_surrogate_never_makes_the_batch_invalid_utf8() -> None:
    body = encode_spans([_span("name \ud800", {"text": "a \udfff b", "k\ud801": 1})])
    (span,) = ExportTraceServiceRequest.FromString(body).resource_spans[0].scope_spans[0].spans  # parsing checks UTF-8
    assert span.name == "name ?"
    assert {kv.key: kv.value.WhichOneof("value") and getattr(kv.value, kv.value.WhichOneof("value"))
            for kv in span.attributes} == {"text": "a ? b", "k?": 1}
