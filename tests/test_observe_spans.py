"""Ghost's own recording spans (`ghost.observe.spans`): what they record is what the SDK's spans
record for the same calls; the SDK's sampler decides them from the standard variables (parent
based by default); the span limits bound them; a turn's spans make one tree in the caller's
trace, ids kept; the SDK's batch processor sends what is queued at shutdown and, when its queue is
full, drops and logs instead of blocking whoever ends a span."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import _clean_attribute_value
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ghost.config import TraceSettings
from ghost.events import Done, TextDelta
from ghost.observe import Telemetry
from ghost.observe.spans import RecordedSpan, SpanMaker
from ghost.observe.tracing import incoming_context, outgoing_headers
from ghost.testing.otlp_receiver import OtlpReceiver

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
RESOURCE = Resource.create({"service.name": "ghost"})
SCOPE = InstrumentationScope("ghost", "1")
TRACE_ENV = ("OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
             "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
             "OTEL_ATTRIBUTE_COUNT_LIMIT", "OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_MAX_QUEUE_SIZE",
             "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
             "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in TRACE_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    sink = OtlpReceiver().start()
    yield sink
    sink.stop()


def _traced(env: pytest.MonkeyPatch, url: str, **settings: str) -> Telemetry:
    env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)  # what the SDK's exporter reads, as in Ghost
    for name, value in settings.items():
        env.setenv(name, value)
    return Telemetry(None, TraceSettings(exporter_otlp_endpoint=url))


def _client_parent(flags: str = "01") -> otel_context.Context:
    return incoming_context([(b"traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-{flags}".encode())])


# --- the same record as the SDK's span ---------------------------------------------------------------


def _exercise(start: Any) -> None:
    """The same calls on a span of either kind: `start(name, kind, attributes, parent)`."""
    span = start("invoke_agent m", SpanKind.INTERNAL,
                 {"first": "a long value", "n": 1, "seq": ["x", "yyyyyyyyy"], "f": 1.5, "b": True}, _client_parent())
    span.set_attribute("later", "v")  # over the count limit: the oldest makes room
    span.set_attributes({"n": 2, "odd": 3j, "nested": {"k": "vvvvvvvvvv"}})
    span.update_name("renamed")
    span.add_event("seen", {"k": "vvvvvvvvvv", "m": 1})
    span.record_exception(ValueError("bad"), {"extra": "x"})
    span.set_status(StatusCode.ERROR, "it broke")
    span.end()
    span.set_attribute("after the end", 1)  # ignored: an ended span does not change
    span.set_status(StatusCode.OK)


def _shape(span: Any) -> tuple:
    events = [(e.name, {k: v for k, v in e.attributes.items() if k != "exception.stacktrace"},
               e.dropped_attributes) for e in span.events]
    context = span.get_span_context()
    return (span.name, span.kind, dict(span.attributes), span.dropped_attributes, span.status.status_code,
            span.status.description, events, span.dropped_events, span.parent, context.trace_id,
            context.trace_flags, context.is_remote, span.resource, span.instrumentation_scope)


def test_a_span_records_what_the_sdks_span_records_for_the_same_calls(env: pytest.MonkeyPatch) -> None:
    env.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "5")
    env.setenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "6")
    env.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "4")  # events' attributes
    sdk_sink, mine_sink = InMemorySpanExporter(), InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(sdk_sink))
    tracer = provider.get_tracer(SCOPE.name, SCOPE.version)
    maker = SpanMaker(RESOURCE, SCOPE, mine_sink)
    _exercise(lambda name, kind, attributes, parent: tracer.start_span(name, parent, kind, attributes))
    _exercise(maker.start)
    maker.shutdown()
    (sdk_span,), (mine,) = sdk_sink.get_finished_spans(), mine_sink.get_finished_spans()
    assert isinstance(mine, RecordedSpan)
    assert _shape(mine) == _shape(sdk_span)
    # Spelled out: at the count limit the oldest went; strings cut; an odd value as its text.
    assert dict(mine.attributes) == {"b": True, "later": "v", "n": 2, "odd": "3j", "nested": {"k": "vvvvvv"}}
    assert (mine.dropped_attributes, mine.name, mine.status.description) == (3, "renamed", "it broke")
    assert mine.parent is not None and format(mine.parent.span_id, "016x") == CLIENT_SPAN


# --- sampling: the SDK's sampler, from the standard variables ---------------------------------------


@pytest.mark.parametrize(("sampler", "arg", "recorded"), [
    # (client's sampled flag -> recorded?) for: no parent, a sampled parent, an unsampled parent
    ("", "", {None: True, "01": True, "00": False}),  # the default: parentbased_always_on
    ("always_off", "", {None: False, "01": False, "00": False}),
    ("always_on", "", {None: True, "01": True, "00": True}),
    ("parentbased_traceidratio", "0", {None: False, "01": True, "00": False}),
    ("parentbased_traceidratio", "1", {None: True, "01": True, "00": False}),
])
def test_the_sdks_sampler_decides_each_span(env: pytest.MonkeyPatch, receiver: OtlpReceiver, sampler: str,
                                            arg: str, recorded: dict[str | None, bool]) -> None:
    settings = {"OTEL_TRACES_SAMPLER": sampler, "OTEL_TRACES_SAMPLER_ARG": arg} if sampler else {}
    telemetry = _traced(env, receiver.url, **settings)
    try:
        for flags, expected in recorded.items():
            parent = _client_parent(flags) if flags else None
            span, ctx = telemetry.tracing.start_span(f"parent {flags}", SpanKind.SERVER, {}, parent)
            child, _ = telemetry.tracing.start_span(f"child {flags}", SpanKind.INTERNAL, {}, ctx)
            assert span.is_recording() is expected and child.is_recording() is expected, flags
            # Recorded or not, the span has its own valid ids and keeps the client's trace.
            assert span.get_span_context().is_valid and child.get_span_context().trace_id == span.get_span_context().trace_id
            if flags:
                assert format(span.get_span_context().trace_id, "032x") == CLIENT_TRACE
            child.end()
            span.end()
    finally:
        telemetry.shutdown()
    sent = sorted(s.name for s in receiver.spans)
    assert sent == sorted(f"{kind} {flags}" for flags, expected in recorded.items() if expected
                          for kind in ("parent", "child"))


def _parent(flags: int, remote: bool, state: str) -> otel_context.Context:
    context = trace.SpanContext(int(CLIENT_TRACE, 16), int(CLIENT_SPAN, 16), remote, trace.TraceFlags(flags),
                                trace.TraceState.from_header([state]) if state else None)
    return trace.set_span_in_context(trace.NonRecordingSpan(context))


_PARENTS = [None, (1, True, "vendor=v1"), (0, True, "vendor=v1"), (1, False, ""), (0, False, ""), (3, True, ""),
            (2, True, "")]


def _samplers() -> dict[str, Any]:
    from opentelemetry.sdk.trace import sampling

    ratio = sampling.TraceIdRatioBased(0.3)
    return {
        "always_on": sampling.ALWAYS_ON, "always_off": sampling.ALWAYS_OFF,
        "parentbased_always_on": sampling.DEFAULT_ON, "parentbased_always_off": sampling.DEFAULT_OFF,
        "traceidratio": ratio, "parentbased_traceidratio": sampling.ParentBasedTraceIdRatio(0.3),
        "parent based, own delegates": sampling.ParentBased(ratio, remote_parent_not_sampled=ratio,
                                                            local_parent_sampled=sampling.ALWAYS_OFF),
        "any other (asked each time)": sampling.AlwaysRecordSampler(sampling.ALWAYS_OFF),  # records, unsampled
    }


@pytest.mark.parametrize("name", list(_samplers()))
def test_each_sampler_decides_as_the_sdks_does(env: pytest.MonkeyPatch, name: str) -> None:
    sampler = _samplers()[name]
    maker = SpanMaker(RESOURCE, SCOPE, InMemorySpanExporter(), sampler=sampler)
    # Every sampler the standard variables can name has a fixed rule, applied without calling it.
    assert (maker.rule is None) is name.startswith("any other")
    try:
        for parent in _PARENTS:
            context = _parent(*parent) if parent else None
            decisions = set()
            for _ in range(200):  # random trace ids: a ratio's both decisions
                span = maker.start("s", SpanKind.INTERNAL, {"a": 1}, context)
                got = span.get_span_context()
                expected = sampler.should_sample(context, got.trace_id, "s", SpanKind.INTERNAL, {"a": 1})
                assert span.is_recording() is expected.decision.is_recording(), (name, parent)
                assert got.trace_flags.sampled is expected.decision.is_sampled(), (name, parent)
                assert got.trace_state == (expected.trace_state or trace.TraceState())
                if parent:
                    assert got.trace_flags.random_trace_id is bool(parent[0] & 2)  # the parent's, as the SDK keeps it
                if span.is_recording():
                    assert dict(span.attributes) == dict(expected.attributes)  # type: ignore[attr-defined]
                decisions.add(expected.decision.is_sampled())
                span.end()
            if "ratio" in name and parent is None:
                assert decisions == {True, False}  # both sides of the ratio were compared
    finally:
        maker.shutdown()


# --- limits, tree, ids ------------------------------------------------------------------------------


def test_span_limits_bound_the_attributes_sent(env: pytest.MonkeyPatch, receiver: OtlpReceiver) -> None:
    telemetry = _traced(env, receiver.url, OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT="3",
                        OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT="8")
    try:
        span, _ = telemetry.tracing.start_span("bounded", SpanKind.INTERNAL, {"a": "x" * 100, "b": 1})
        span.set_attributes({"c": ("long value", "ok"), "d": True})
        span.end()
    finally:
        telemetry.shutdown()
    (sent,) = receiver.spans
    assert sent.attributes == {"b": 1, "c": ("long val", "ok"), "d": True}  # the oldest went, strings cut


def test_a_turns_spans_are_one_tree_in_the_callers_trace(env: pytest.MonkeyPatch, receiver: OtlpReceiver) -> None:
    telemetry = _traced(env, receiver.url)
    tracing = telemetry.tracing
    try:
        server, server_ctx = tracing.start_span("POST /v1/chat/completions", SpanKind.SERVER, {}, _client_parent())
        agent, agent_ctx = tracing.start_span("invoke_agent m", SpanKind.INTERNAL, {}, server_ctx)
        token = otel_context.attach(agent_ctx)  # as the turn's observer runs each step
        try:
            chat, chat_ctx = tracing.start_span("chat m", SpanKind.CLIENT, {})  # the current span is the parent
        finally:
            otel_context.detach(token)
        token = otel_context.attach(chat_ctx)
        try:
            told = outgoing_headers()  # what the upstream request carries
            assert trace.get_current_span() is chat
        finally:
            otel_context.detach(token)
        for span in (chat, agent, server):
            span.end()
    finally:
        telemetry.shutdown()
    spans = {s.name: s for s in receiver.spans}
    ids = {s.span_id for s in spans.values()}
    assert len(ids) == 3 and "0" * 16 not in ids
    assert {s.trace_id for s in spans.values()} == {CLIENT_TRACE}
    assert spans["POST /v1/chat/completions"].parent_span_id == CLIENT_SPAN
    assert spans["invoke_agent m"].parent_span_id == spans["POST /v1/chat/completions"].span_id
    assert spans["chat m"].parent_span_id == spans["invoke_agent m"].span_id
    assert spans["chat m"].kind == 3 and spans["POST /v1/chat/completions"].kind == 2
    assert told == {"traceparent": f"00-{CLIENT_TRACE}-{spans['chat m'].span_id}-01"}


async def test_the_turns_span_is_current_through_the_turn_in_its_task_and_gone_after(
        env: pytest.MonkeyPatch, receiver: OtlpReceiver) -> None:
    telemetry = _traced(env, receiver.url)
    inside: list[Any] = []

    async def turn() -> Any:
        inside.append(trace.get_current_span())
        yield TextDelta("a")
        inside.append(trace.get_current_span())  # a later step: the same span, attached once
        yield Done("stop")

    async def iterate() -> tuple[Any, list[Any], Any]:  # as ghost.agent.pump's producer task does
        before = trace.get_current_span()
        between = [trace.get_current_span() async for _ in telemetry.turns_of("admin").observe(turn(), "m")]
        return before, between, trace.get_current_span()

    try:
        before, between, after = await asyncio.create_task(iterate())
    finally:
        telemetry.shutdown()
    assert isinstance(inside[0], RecordedSpan) and inside[0].name == "invoke_agent m"  # the probe sees the span
    assert inside == [inside[0]] * 2 and between == [inside[0]] * 2
    assert after is before and not after.get_span_context().is_valid  # the task's context as it was
    assert [s.name for s in receiver.spans] == ["invoke_agent m"]


async def test_a_turn_closed_from_another_task_ends_its_span_without_touching_that_tasks_context(
        env: pytest.MonkeyPatch, receiver: OtlpReceiver, caplog: pytest.LogCaptureFixture) -> None:
    telemetry = _traced(env, receiver.url)

    async def turn() -> Any:
        yield TextDelta("a")
        yield Done("stop")

    events = telemetry.turns_of("admin").observe(turn(), "m")

    async def start() -> None:
        await anext(events)  # the span attached in this task, which then ends

    try:
        await asyncio.create_task(start())
        mine = trace.get_current_span()
        with caplog.at_level(logging.WARNING):
            await events.aclose()  # from this task: the turn left unfinished, as a collected one is closed
        assert trace.get_current_span() is mine
        assert not any("detach" in r.getMessage() for r in caplog.records), caplog.records
    finally:
        telemetry.shutdown()
    (span,) = receiver.spans
    assert span.name == "invoke_agent m" and span.attributes["ghost.turn.outcome"] == "cancelled"


@pytest.mark.parametrize("value", [("stop",), (), ("tool_calls", "stop"), ("x" * 12,), ("a", 1), ("a", None),
                                   (1, 2), (True, False), (1.5,), ["stop"]])
def test_a_sequence_attribute_is_kept_as_the_apis_cleaning_keeps_it(env: pytest.MonkeyPatch, receiver: OtlpReceiver,
                                                                     value: Any) -> None:
    telemetry = _traced(env, receiver.url, OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT="10")
    try:
        span, _ = telemetry.tracing.start_span("chat m", SpanKind.CLIENT, {"reasons": value})
        span.end()
    finally:
        telemetry.shutdown()
    assert span.attributes.get("reasons") == _clean_attribute_value(value, 10)


@pytest.mark.parametrize("header", [
    f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-03",
    None, "", "garbage", f"00-{'0' * 32}-{CLIENT_SPAN}-01", f"ff-{CLIENT_TRACE}-{CLIENT_SPAN}-01"])
@pytest.mark.parametrize("state", [None, "vendor=value,other=1"])
def test_trace_context_in_and_out_is_what_the_w3c_propagator_reads_and_writes(
        env: pytest.MonkeyPatch, receiver: OtlpReceiver, header: str | None, state: str | None) -> None:
    """`incoming_context` and `outgoing_headers` skip the propagator's carrier calls: what they
    read and write stays the propagator's, whatever the caller sends (or leaves out)."""
    propagator = TraceContextTextMapPropagator()
    headers = [(b"host", b"ghost"), *([(b"traceparent", header.encode())] if header is not None else []),
               *([(b"tracestate", state.encode())] if state is not None else [])]
    carrier = {name.decode(): value.decode() for name, value in headers[1:]}
    ours, theirs = incoming_context(headers), propagator.extract(carrier)
    assert trace.get_current_span(ours).get_span_context() == trace.get_current_span(theirs).get_span_context()
    telemetry = _traced(env, receiver.url)
    try:
        span, ctx = telemetry.tracing.start_span("chat m", SpanKind.CLIENT, {}, ours)
        token = otel_context.attach(ctx)
        try:
            written: dict[str, str] = {}
            propagator.inject(written)
            assert outgoing_headers() == written and written["traceparent"].split("-")[2] != CLIENT_SPAN
        finally:
            otel_context.detach(token)
        span.end()
    finally:
        telemetry.shutdown()
    assert outgoing_headers() == {}  # no span current


# --- the batch processor: shutdown flush, a full queue ---------------------------------------------


def test_shutdown_sends_every_queued_span(env: pytest.MonkeyPatch, receiver: OtlpReceiver) -> None:
    telemetry = _traced(env, receiver.url, OTEL_BSP_SCHEDULE_DELAY="600000")  # no export before shutdown
    for n in range(50):
        telemetry.tracing.start_span(f"span {n}", SpanKind.INTERNAL, {"n": n})[0].end()
    assert receiver.spans == []  # still queued
    telemetry.shutdown()
    assert sorted(s.attributes["n"] for s in receiver.spans) == list(range(50))


def test_a_full_queue_drops_and_logs_and_never_blocks(env: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    # A collector that takes the connection and never answers: the export thread waits on it.
    silent = socket.create_server(("127.0.0.1", 0))
    telemetry = _traced(env, f"http://127.0.0.1:{silent.getsockname()[1]}", OTEL_BSP_MAX_QUEUE_SIZE="8",
                        OTEL_BSP_MAX_EXPORT_BATCH_SIZE="4", OTEL_EXPORTER_OTLP_TIMEOUT="2")
    ended = threading.Event()

    def end_many() -> None:
        for n in range(500):
            telemetry.tracing.start_span(f"span {n}", SpanKind.INTERNAL, {})[0].end()
        ended.set()

    try:
        with caplog.at_level(logging.WARNING):
            worker = threading.Thread(target=end_many, daemon=True)
            worker.start()
            worker.join(30)  # a bound for a hang, not a timing: 500 ends take milliseconds
            assert ended.is_set(), "ending a span blocked on the full queue"
        assert any("Queue full" in r.getMessage() for r in caplog.records)  # the SDK's log line
    finally:
        silent.close()  # the export fails; shutdown then returns
        telemetry.shutdown()
