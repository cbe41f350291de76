"""OpenTelemetry traces of a real Ghost, exported over OTLP/HTTP to a receiver the test runs: the
span tree of a two-round tool turn, its GenAI attributes, the client's trace kept, and the
`traceparent` the upstream (the scripted fake) and the proxy's target received. Tracing off (the
default): nothing injected, and the SDK not even imported."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ghost.config import TraceSettings
from ghost.observe.content import CUT_MARK, request_attributes
from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.otlp_receiver import OtlpReceiver, ReceivedSpan
from ghost.testing.server import GhostServer, clean_env
from ghost.testing.wait import until
from mcp_toys import HttpToy, install_toy, toy, write_config

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
SERVER_KIND, CLIENT_KIND = 2, 3  # OTLP's SpanKind numbers


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    sink = OtlpReceiver().start()
    yield sink
    sink.stop()


@pytest.fixture(scope="module")
def traced(upstream: FakeUpstream, receiver: OtlpReceiver, http_toy: HttpToy,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "50",
           "OTEL_SERVICE_NAME": "ghost-under-test"}
    home = tmp_path_factory.mktemp("traced")
    install_toy(home, "toy")
    write_config(home, {"toy": toy(), "web": {"url": http_toy.url}})  # sandboxed stdio; Streamable HTTP
    with GhostServer("--upstream-url", upstream.url, home=home, env=env) as server:
        yield server


def _chat(server: GhostServer, text: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/chat/completions", headers={**server.headers, **(headers or {})},
                      json={"messages": [{"role": "user", "content": text}]}, timeout=60)


def _in_trace(spans: list[ReceivedSpan], trace_id: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.trace_id == trace_id]


def _turn_done(spans: list[ReceivedSpan]) -> bool:
    mine = _in_trace(spans, CLIENT_TRACE)
    names = [s.name.split()[0] for s in mine]
    return names.count("chat") == 2 and "execute_tool" in names and "invoke_agent" in names and \
        any(s.kind == SERVER_KIND and s.attributes.get("http.route") == "/v1/chat/completions" for s in mine)


def test_a_two_round_tool_turn_is_one_trace_under_the_clients_parent(
        traced: GhostServer, upstream: FakeUpstream, receiver: OtlpReceiver) -> None:
    upstream.script(Reply(content="", tool_calls=[{"id": "call_t1", "name": "execute",
                                                   "arguments": {"code": "print(6 * 7)"}}]),
                    Reply(content="forty-two", usage={"prompt_tokens": 31, "completion_tokens": 7, "total_tokens": 38}))
    reply = _chat(traced, "what is six times seven", {"traceparent": TRACEPARENT})
    assert reply.status_code == 200, reply.text
    spans = _in_trace(receiver.wait_for(_turn_done), CLIENT_TRACE)
    by_id = {s.span_id: s for s in spans}

    server = next(s for s in spans if s.kind == SERVER_KIND and s.attributes.get("http.route") == "/v1/chat/completions")
    assert server.parent_span_id == CLIENT_SPAN  # the client's span is the parent: its trace goes on
    assert server.name == "POST /v1/chat/completions" and server.attributes["http.response.status_code"] == 200
    agent = next(s for s in spans if s.name.startswith("invoke_agent"))
    assert agent.parent_span_id == server.span_id
    assert agent.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert agent.attributes["gen_ai.request.model"] == "fake-model"
    assert agent.attributes["gen_ai.usage.input_tokens"] == 10 + 31  # summed over both calls
    assert agent.attributes["gen_ai.usage.output_tokens"] == 5 + 7

    children = [s for s in spans if s.parent_span_id == agent.span_id]
    assert sorted(s.name for s in children) == ["chat fake-model", "chat fake-model", "execute_tool execute"]
    chats = [s for s in children if s.name.startswith("chat")]
    for chat in chats:
        assert chat.kind == CLIENT_KIND
        assert chat.attributes["gen_ai.operation.name"] == "chat"
        assert chat.attributes["gen_ai.request.model"] == "fake-model"
    # Which call was first is told by what it answered, not by clocks.
    first = next(c for c in chats if c.attributes["gen_ai.response.finish_reasons"] == ("tool_calls",))
    second = next(c for c in chats if c.attributes["gen_ai.response.finish_reasons"] == ("stop",))
    assert (first.attributes["gen_ai.usage.input_tokens"], first.attributes["gen_ai.usage.output_tokens"]) == (10, 5)
    assert (second.attributes["gen_ai.usage.input_tokens"], second.attributes["gen_ai.usage.output_tokens"]) == (31, 7)
    tool = next(s for s in children if s.name.startswith("execute_tool"))
    assert tool.attributes == {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "execute",
                               "gen_ai.tool.call.id": "call_t1"}
    assert tool.status_code != 2  # not an error
    assert server.resource["service.name"] == "ghost-under-test"
    assert all(s.parent_span_id in by_id or s is server for s in spans)  # one tree

    # The upstream saw each chat call's own span as its parent, in the client's trace.
    sent = [r["headers"].get("traceparent", "") for r in upstream.chat_requests()]
    assert sorted(sent) == sorted(f"00-{CLIENT_TRACE}-{c.span_id}-01" for c in chats)


@pytest.mark.parametrize(("server", "over_http"), [("toy", False), ("web", True)])
def test_an_mcp_call_carries_the_trace_context_on(traced: GhostServer, upstream: FakeUpstream,
                                                 receiver: OtlpReceiver, server: str, over_http: bool) -> None:
    trace = ("9" if over_http else "b") * 32
    name = f"{server}__trace_context"
    upstream.script(Reply(content="", tool_calls=[{"id": "call_mcp", "name": name, "arguments": {}}]),
                    Reply(content="seen"))
    assert _chat(traced, "which trace", {"traceparent": f"00-{trace}-{'a' * 16}-01"}).status_code == 200
    spans = receiver.wait_for(lambda got: any(s.name == f"execute_tool {name}" for s in _in_trace(got, trace)))
    tool = next(s for s in _in_trace(spans, trace) if s.name == f"execute_tool {name}")
    told = upstream.chat_requests()[-1]["body"]["messages"][-1]
    assert told["role"] == "tool", told
    expected = f"00-{trace}-{tool.span_id}-01"
    # In the request's _meta always; over HTTP as the traceparent header too.
    assert json.loads(told["content"]) == {"meta": expected, "header": expected if over_http else None}


def test_no_prompt_or_file_content_is_in_the_spans(traced: GhostServer, upstream: FakeUpstream,
                                                   receiver: OtlpReceiver) -> None:
    secret = "zebra-quartz-7781"
    upstream.script(Reply(content="", tool_calls=[{"id": "call_s", "name": "write_file",
                                                   "arguments": {"path": "s.txt", "content": secret}}]),
                    Reply(content=f"saved {secret}"))
    trace = "5" * 32
    assert _chat(traced, f"remember {secret}", {"traceparent": f"00-{trace}-{'6' * 16}-01"}).status_code == 200
    spans = receiver.wait_for(lambda got: sum(s.name.startswith("chat") for s in _in_trace(got, trace)) == 2)
    mine = _in_trace(spans, trace)
    assert any("write_file" in json.dumps(s.attributes) for s in mine)  # the probe finds what spans carry
    assert not any(secret in json.dumps(s.attributes, default=str) + s.name for s in mine)


def test_a_failing_upstream_call_is_an_error_span(traced: GhostServer, upstream: FakeUpstream,
                                                 receiver: OtlpReceiver) -> None:
    upstream.script(Reply(status=500, body='{"error": "boom"}'))
    trace = "7" * 32
    reply = _chat(traced, "fail please", {"traceparent": f"00-{trace}-{'8' * 16}-01"})
    assert reply.status_code >= 500
    spans = receiver.wait_for(lambda got: any(s.name.startswith("chat") for s in _in_trace(got, trace)))
    chat = next(s for s in _in_trace(spans, trace) if s.name.startswith("chat"))
    assert chat.status_code == 2 and chat.attributes["error.type"]


def test_the_proxy_carries_the_trace_on(traced: GhostServer, upstream: FakeUpstream, receiver: OtlpReceiver) -> None:
    reply = httpx.get(f"{traced.url}/echo/traced", headers={**traced.headers, "traceparent": TRACEPARENT}, timeout=30)
    assert reply.status_code == 200
    spans = receiver.wait_for(lambda got: any(s.attributes.get("http.route") == "proxy"
                                              for s in _in_trace(got, CLIENT_TRACE)))
    proxy = next(s for s in _in_trace(spans, CLIENT_TRACE) if s.attributes.get("http.route") == "proxy")
    assert proxy.name == "GET proxy" and proxy.parent_span_id == CLIENT_SPAN
    received = [r for r in upstream.requests if r["path"] == "/echo/traced"][-1]
    values = [v for k, v in received["header_list"] if k == "traceparent"]
    assert values == [f"00-{CLIENT_TRACE}-{proxy.span_id}-01"]  # Ghost's span, once: not the client's too


# --- what happened to the spans, in the metrics --------------------------------------------------------

def _span_counts(server: GhostServer) -> tuple[float, float, float]:
    """(ended, exported ok, export failed) from the server's /metrics."""
    reply = httpx.get(f"{server.url}/metrics", headers=server.headers, timeout=30)
    assert reply.status_code == 200, reply.text
    samples = {(s.name, s.labels.get("outcome", "")): s.value
               for family in text_string_to_metric_families(reply.text) for s in family.samples}
    return (samples[("ghost_trace_spans_ended_total", "")], samples[("ghost_trace_spans_exported_total", "ok")],
            samples[("ghost_trace_spans_exported_total", "failed")])


def test_every_span_ended_is_counted_and_so_is_what_the_collector_took(
        upstream: FakeUpstream, tmp_path: Path) -> None:
    sink = OtlpReceiver().start()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_BSP_SCHEDULE_DELAY": "50"}
    try:
        with GhostServer("--upstream-url", upstream.url, home=tmp_path, env=env) as server:
            assert _chat(server, "count my spans").status_code == 200
            sink.wait_for(lambda got: any(s.name.startswith("invoke_agent") for s in got))
            # Each scrape makes a span of its own, ended after its text: once a scrape finds every
            # span before it exported, Ghost ends exactly one more (that scrape's) and the
            # collector receives exactly the spans Ghost counted.
            ended, ok, failed = until(lambda: (c := _span_counts(server))[0] == c[1] and c, "every span ended exported", 30)
            assert ended >= 3 and failed == 0  # at least the turn's: the request, invoke_agent, chat
            got = sink.wait_for(lambda got: len(got) >= ended + 1)
            time.sleep(0.3)  # several export delays: nothing more comes
            assert len(sink.snapshot()) == len(got) == ended + 1
    finally:
        sink.stop()


def test_spans_the_collector_refuses_are_counted_as_failed(upstream: FakeUpstream, tmp_path: Path) -> None:
    refusing = OtlpReceiver(paths=()).start()  # answers every export with a 404
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": refusing.url, "OTEL_BSP_SCHEDULE_DELAY": "50"}
    try:
        with GhostServer("--upstream-url", upstream.url, home=tmp_path, env=env) as server:
            assert _chat(server, "nobody takes these").status_code == 200
            ended, ok, failed = until(lambda: (c := _span_counts(server))[2] >= 3 and c, "three spans failed", 30)
            assert ok == 0 and failed <= ended
            assert refusing.requests and all(path == "/v1/traces" for path, _ in refusing.requests)
    finally:
        refusing.stop()


# --- content, only when asked for ----------------------------------------------------------------------

CONTENT_MAX_CHARS = 600


@pytest.fixture(scope="module")
def content_traced(upstream: FakeUpstream, receiver: OtlpReceiver,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "50",
           "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
           "GHOST_TRACE_CONTENT_MAX_CHARS": str(CONTENT_MAX_CHARS)}
    with GhostServer("--upstream-url", upstream.url, home=tmp_path_factory.mktemp("content"), env=env) as server:
        yield server


def test_with_content_capture_on_the_spans_carry_messages_and_tool_io(
        content_traced: GhostServer, upstream: FakeUpstream, receiver: OtlpReceiver) -> None:
    secret = "zebra-quartz-7781"
    upstream.script(Reply(content="", tool_calls=[{"id": "call_c", "name": "write_file",
                                                   "arguments": {"path": "c.txt", "content": secret}}]),
                    Reply(content=f"saved {secret}"))
    trace = "c0" * 16
    assert _chat(content_traced, f"remember {secret}", {"traceparent": f"00-{trace}-{'a' * 16}-01"}).status_code == 200
    spans = _in_trace(receiver.wait_for(
        lambda got: sum(s.name.startswith("chat") for s in _in_trace(got, trace)) == 2), trace)
    chats = [s for s in spans if s.name.startswith("chat")]
    first = next(c for c in chats if c.attributes["gen_ai.response.finish_reasons"] == ("tool_calls",))
    second = next(c for c in chats if c.attributes["gen_ai.response.finish_reasons"] == ("stop",))

    asked = json.loads(first.attributes["gen_ai.input.messages"])
    assert asked[-1] == {"role": "user", "parts": [{"type": "text", "content": f"remember {secret}"}]}
    system = json.loads(first.attributes["gen_ai.system_instructions"])  # Ghost's prompt, cut at the bound
    assert system[0]["type"] == "text" and system[0]["content"].endswith(CUT_MARK)
    called = json.loads(first.attributes["gen_ai.output.messages"])
    assert called[0]["role"] == "assistant" and called[0]["finish_reason"] == "tool_calls"
    call = next(p for p in called[0]["parts"] if p["type"] == "tool_call")
    assert (call["id"], call["name"], json.loads(call["arguments"])) == \
        ("call_c", "write_file", {"path": "c.txt", "content": secret})
    answered = json.loads(second.attributes["gen_ai.output.messages"])
    assert answered[0]["parts"] == [{"type": "text", "content": f"saved {secret}"}]
    # The second call's input has the tool's result as the model saw it.
    assert any(p["type"] == "tool_call_response" and p["id"] == "call_c"
               for m in json.loads(second.attributes["gen_ai.input.messages"]) for p in m["parts"])

    tool = next(s for s in spans if s.name.startswith("execute_tool"))
    assert json.loads(tool.attributes["gen_ai.tool.call.arguments"]) == {"path": "c.txt", "content": secret}
    assert "c.txt" in tool.attributes["gen_ai.tool.call.result"]


def test_captured_content_is_cut_at_its_bound(content_traced: GhostServer, upstream: FakeUpstream,
                                             receiver: OtlpReceiver) -> None:
    long_reply = "word " * 400  # 2,000 characters
    upstream.script(Reply(content=long_reply))
    trace = "d0" * 16
    assert _chat(content_traced, "x" * 3000, {"traceparent": f"00-{trace}-{'c' * 16}-01"}).status_code == 200
    spans = receiver.wait_for(lambda got: any(s.name.startswith("chat") for s in _in_trace(got, trace)))
    chat = next(s for s in _in_trace(spans, trace) if s.name.startswith("chat"))
    for name in ("gen_ai.input.messages", "gen_ai.output.messages"):
        value = chat.attributes[name]
        assert len(value) <= CONTENT_MAX_CHARS, name
        (message,) = json.loads(value)  # still valid JSON: the text inside is what was cut
        assert message["parts"][0]["content"].endswith(CUT_MARK), name
        kept = message["parts"][0]["content"][:-len(CUT_MARK)]
        assert len(kept) > CONTENT_MAX_CHARS // 4 and (("x" * 3000).startswith(kept) or long_reply.startswith(kept))


# --- tracing off, the default -----------------------------------------------------------------------


def test_tracing_off_sends_no_traceparent_of_its_own(ghost: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="plain"))
    assert _chat(ghost, "hello", {"traceparent": TRACEPARENT}).status_code == 200
    assert "traceparent" not in upstream.chat_requests()[-1]["headers"]
    # The proxy passes the client's headers as they are, its traceparent too (nothing is invented).
    assert httpx.get(f"{ghost.url}/echo/off", headers={**ghost.headers, "traceparent": TRACEPARENT}).status_code == 200
    received = [r for r in upstream.requests if r["path"] == "/echo/off"][-1]
    assert [v for k, v in received["header_list"] if k == "traceparent"] == [TRACEPARENT]


def test_tracing_off_never_imports_the_sdk(tmp_path: Path) -> None:
    # One process: an app built with tracing off, then (the probe shown to see it) one with it on.
    # The SDK, its OTLP exporter, the proto classes and Ghost's exporter module: none is loaded.
    probe = ("import os, sys; from ghost.app import create_app; from ghost.config import Settings\n"
             "heavy = ('opentelemetry.sdk', 'opentelemetry.exporter', 'opentelemetry.proto', 'google.protobuf',\n"
             "         'ghost.observe.otlp')\n"
             "def loaded(): return sorted({m for m in sys.modules for h in heavy if m == h or m.startswith(h + '.')})\n"
             "off = create_app(Settings(home=sys.argv[1])).state.telemetry.tracing.enabled\n"
             "print(off, len(loaded()))\n"
             "os.environ['OTEL_EXPORTER_OTLP_ENDPOINT'] = 'http://127.0.0.1:9'\n"
             "on = create_app(Settings(home=sys.argv[1])).state.telemetry.tracing.enabled\n"
             "print(on, all(any(m.startswith(h) for m in loaded()) for h in heavy))")
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"}, check=True).stdout.split()
    assert out == ["False", "0", "True", "True"]


@pytest.mark.parametrize(("env", "enabled"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "TRUE"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "no"}, True),
])
def test_the_standard_variables_turn_tracing_on(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                                enabled: bool) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert TraceSettings().enabled is enabled


def test_a_long_history_keeps_its_newest_messages_whole_as_valid_json() -> None:
    messages = [{"role": "user", "content": f"message {i} " + "y" * 100} for i in range(50)]
    value = request_attributes(messages, 1000)["gen_ai.input.messages"]
    kept = json.loads(value)
    assert len(value) <= 1000 and 1 <= len(kept) < 50
    assert kept[-1]["parts"][0]["content"] == messages[-1]["content"]  # the newest, whole
    assert [m["parts"][0]["content"] for m in kept] == [m["content"] for m in messages[-len(kept):]]
    assert CUT_MARK not in value


def test_a_bad_content_bound_is_a_clear_error_at_start(tmp_path: Path) -> None:
    env = clean_env({"GHOST_TRACE_CONTENT_MAX_CHARS": "lots"})
    done = subprocess.run([sys.executable, "-m", "ghost", "serve", "--home", str(tmp_path), "--port", "0"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "invalid setting" in done.stderr and "GHOST_TRACE_CONTENT_MAX_CHARS" in done.stderr
    assert "Traceback" not in done.stderr
