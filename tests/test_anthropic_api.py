"""The Anthropic Messages API with the official `anthropic` SDK against a real Ghost and the fake upstream."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import httpx
import pytest

from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer

USER = [{"role": "user", "content": "hi"}]
WEATHER = {"name": "get_weather", "description": "The weather in a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture(scope="module")
def server(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    with GhostServer("--upstream-url", upstream.url, "--keepalive-seconds", "0.2",
                     home=tmp_path_factory.mktemp("anthropic-home")) as ghost:
        yield ghost


@pytest.fixture()
def claude(server: GhostServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=server.api_key, max_retries=0)


def sse_items(text: str) -> list[tuple[str, dict]]:
    """(event name, data) of each SSE event; comment lines skipped."""
    items = []
    for block in text.split("\n\n"):
        lines = [line for line in block.splitlines() if line and not line.startswith(":")]
        if not lines:
            continue
        event = next(line[7:] for line in lines if line.startswith("event: "))
        data = json.loads("".join(line[6:] for line in lines if line.startswith("data: ")))
        assert data["type"] == event
        items.append((event, data))
    return items


def check_anthropic_order(items: list[tuple[str, dict]]) -> None:
    """Anthropic's grammar: message_start, blocks (start, deltas, stop; indexes 0, 1, ...),
    message_delta, message_stop; ping anywhere after message_start."""
    names = [name for name, _ in items if name != "ping"]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"], names
    open_index, next_index = None, 0
    for name, data in items[1:-2]:
        if name == "ping":
            continue
        if name == "content_block_start":
            assert open_index is None and data["index"] == next_index, names
            open_index, next_index = data["index"], next_index + 1
        elif name == "content_block_delta":
            assert data["index"] == open_index, names
        elif name == "content_block_stop":
            assert data["index"] == open_index, names
            open_index = None
        else:
            raise AssertionError(f"unexpected {name} inside the message: {names}")
    assert open_index is None, names


def post(server: GhostServer, body: dict, headers: dict | None = None, path: str = "/v1/messages") -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=30,
                      headers={"x-api-key": server.api_key, "anthropic-version": "2023-06-01", **(headers or {})})


# --- messages.create ----------------------------------------------------------------------------

def test_create_answers_with_a_text_message(claude: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="The answer is 4."))
    message = claude.messages.create(model="fake-model", max_tokens=64, messages=USER)
    assert message.type == "message" and message.role == "assistant" and message.model == "fake-model"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "The answer is 4."
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (10, 5)


def test_request_reaches_the_upstream_openai_shaped(claude: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="ok"))
    claude.messages.create(
        model="fake-model", max_tokens=77, stop_sequences=["END"], extra_body={"temperature": 0.3, "top_p": 0.9, "top_k": 20},
        metadata={"user_id": "u-1"}, system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}])
    sent = upstream.chat_requests()[-1]["body"]
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"], sent["top_k"]) == (77, 0.3, 0.9, 20)
    assert sent["stop"] == ["END"] and sent["user"] == "u-1"
    messages = sent["messages"]
    assert messages[0]["role"] == "system" and "Ghost" in messages[0]["content"]  # Ghost's own prompt first
    assert messages[1] == {"role": "system", "content": "Be brief."}
    assert messages[2] == {"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}


def test_length_stop_is_max_tokens(claude: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="cut", finish_reason="length"))
    assert claude.messages.create(model="fake-model", max_tokens=1, messages=USER).stop_reason == "max_tokens"


def test_ghost_activity_and_reasoning_are_thinking_blocks(claude: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="", reasoning="Let me look.", tool_calls=[{"name": "list_files", "arguments": {}}]),
                    Reply(content="Nothing there."))
    message = claude.messages.create(model="fake-model", max_tokens=64, messages=USER)
    assert [block.type for block in message.content] == ["thinking", "text"]
    thinking = message.content[0].thinking
    assert thinking.startswith("Let me look.") and "→ list_files" in thinking and "← list_files" in thinking
    assert message.content[1].text == "Nothing there."
    # Ghost's own tool never reaches the client as a tool_use
    assert message.stop_reason == "end_turn"


def test_thinking_disabled_shows_no_thinking_blocks(claude: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="", reasoning="Let me look.", tool_calls=[{"name": "list_files", "arguments": {}}]),
                    Reply(content="Nothing there."))
    message = claude.messages.create(model="fake-model", max_tokens=64, messages=USER, thinking={"type": "disabled"})
    assert [block.type for block in message.content] == ["text"]
    assert len(upstream.chat_requests()) == 2  # Ghost's tool still ran


def test_system_role_messages_and_strict_tools(claude: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="ok"))
    claude.messages.create(model="fake-model", max_tokens=8, tools=[{**WEATHER, "strict": True}], messages=[
        {"role": "user", "content": "hi"}, {"role": "system", "content": [{"type": "text", "text": "Now in French."}]},
        {"role": "user", "content": "again"}])
    sent = upstream.chat_requests()[-1]["body"]
    assert sent["messages"][-2:] == [{"role": "system", "content": "Now in French."}, {"role": "user", "content": "again"}]
    weather = next(t for t in sent["tools"] if t["function"]["name"] == "get_weather")
    assert weather["function"]["strict"] is True


# --- client tools -------------------------------------------------------------------------------

def test_client_tool_round_trip(claude: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="Checking.", tool_calls=[{"id": "call_w1", "name": "get_weather",
                                                            "arguments": {"city": "Oslo"}}]))
    first = claude.messages.create(model="fake-model", max_tokens=64, tools=[WEATHER], messages=[
        {"role": "user", "content": "Weather in Oslo?"}])
    assert first.stop_reason == "tool_use"
    assert [block.type for block in first.content] == ["text", "tool_use"]
    call = first.content[1]
    assert (call.id, call.name, call.input) == ("call_w1", "get_weather", {"city": "Oslo"})
    sent_tools = upstream.chat_requests()[-1]["body"]["tools"]
    assert {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                             "parameters": WEATHER["input_schema"]}} in sent_tools

    upstream.script(Reply(content="It is sunny in Oslo."))
    second = claude.messages.create(model="fake-model", max_tokens=64, tools=[WEATHER], messages=[
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_w1", "content": "sunny, 21C"},
                                     {"type": "text", "text": "Thanks"}]}])
    assert second.content[0].text == "It is sunny in Oslo." and second.stop_reason == "end_turn"
    messages = upstream.chat_requests()[-1]["body"]["messages"]
    assert messages[-3] == {"role": "assistant", "content": "Checking.", "tool_calls": [
        {"id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]}
    assert messages[-2] == {"role": "tool", "tool_call_id": "call_w1", "content": "sunny, 21C"}
    assert messages[-1] == {"role": "user", "content": "Thanks"}


def test_tool_choice_maps_to_openai(claude: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="a"), Reply(content="b"))
    claude.messages.create(model="fake-model", max_tokens=8, tools=[WEATHER], messages=USER,
                           tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True})
    claude.messages.create(model="fake-model", max_tokens=8, tools=[WEATHER], messages=USER, tool_choice={"type": "any"})
    first, second = (request["body"] for request in upstream.chat_requests()[-2:])
    assert first["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert first["parallel_tool_calls"] is False
    assert second["tool_choice"] == "required"


# --- streaming ----------------------------------------------------------------------------------

def test_stream_relays_text_and_ends_in_a_message(claude: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    upstream.script(Reply(chunks=["Hel", "lo", " wor", "ld"]))
    with claude.messages.stream(model="fake-model", max_tokens=64, messages=USER) as stream:
        pieces = list(stream.text_stream)
        message = stream.get_final_message()
    assert pieces == ["Hel", "lo", " wor", "ld"]
    assert message.content[0].text == "Hello world" and message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (10, 5)


def test_stream_event_sequence_follows_anthropic_order(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="", reasoning="hmm", tool_calls=[{"name": "list_files", "arguments": {}}]),
                    Reply(content="Done.", tool_calls=[{"id": "call_a", "name": "get_weather", "arguments": {"city": "A"}},
                                                       {"id": "call_b", "name": "get_weather", "arguments": {"city": "B"}}]))
    response = post(server, {"model": "fake-model", "max_tokens": 64, "stream": True, "messages": USER,
                             "tools": [WEATHER]})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    items = sse_items(response.text)
    check_anthropic_order(items)
    starts = [data["content_block"]["type"] for name, data in items if name == "content_block_start"]
    assert starts == ["thinking", "text", "tool_use", "tool_use"]
    inputs = [json.loads(data["delta"]["partial_json"]) for name, data in items
              if name == "content_block_delta" and data["delta"]["type"] == "input_json_delta"]
    assert inputs == [{"city": "A"}, {"city": "B"}]
    final = items[-2][1]
    assert final["delta"]["stop_reason"] == "tool_use"


def test_the_order_check_catches_a_wrong_order() -> None:
    start = ("message_start", {"type": "message_start"})
    block = [("content_block_start", {"index": 0}), ("content_block_delta", {"index": 0})]
    with pytest.raises(AssertionError):  # a block never stopped
        check_anthropic_order([start, *block, ("message_delta", {}), ("message_stop", {})])
    with pytest.raises(AssertionError):  # message_stop before message_delta
        check_anthropic_order([start, ("message_stop", {}), ("message_delta", {})])


def test_stream_and_create_build_the_same_message(claude: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    script = [Reply(content="", reasoning="think", tool_calls=[{"name": "list_files", "arguments": {}}]),
              Reply(content="Answer.", tool_calls=[{"id": "call_s", "name": "get_weather", "arguments": {"city": "X"}}])]
    upstream.script(*script)
    created = claude.messages.create(model="fake-model", max_tokens=64, messages=USER, tools=[WEATHER])
    upstream.script(*script)
    with claude.messages.stream(model="fake-model", max_tokens=64, messages=USER, tools=[WEATHER]) as stream:
        streamed = stream.get_final_message()
    assert created.model_dump(exclude={"id"}) == streamed.model_dump(exclude={"id"})


def test_upstream_failure_mid_stream_is_an_error_event(claude: anthropic.Anthropic, server: GhostServer,
                                                       upstream: FakeUpstream) -> None:
    upstream.script(Reply(chunks=["one", " two", " three"], fail_after=2))
    response = post(server, {"model": "fake-model", "max_tokens": 64, "stream": True, "messages": USER})
    items = sse_items(response.text)
    assert items[0][0] == "message_start" and items[-1][0] == "error"
    assert items[-1][1]["error"]["type"] == "api_error" and items[-1][1]["error"]["message"]
    assert not any(name == "message_stop" for name, _ in items)

    upstream.script(Reply(chunks=["one", " two", " three"], fail_after=2))
    with pytest.raises(anthropic.APIStatusError):
        with claude.messages.stream(model="fake-model", max_tokens=64, messages=USER) as stream:
            for _ in stream:
                pass


# --- errors and auth ----------------------------------------------------------------------------

def test_auth_by_x_api_key_and_by_bearer(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="key"), Reply(content="bearer"))
    by_key = anthropic.Anthropic(base_url=server.url, api_key=server.api_key, max_retries=0)
    by_bearer = anthropic.Anthropic(base_url=server.url, auth_token=server.api_key, max_retries=0)
    assert by_key.messages.create(model="fake-model", max_tokens=8, messages=USER).content[0].text == "key"
    assert by_bearer.messages.create(model="fake-model", max_tokens=8, messages=USER).content[0].text == "bearer"


def test_wrong_key_is_401_in_anthropic_shape(server: GhostServer) -> None:
    wrong = anthropic.Anthropic(base_url=server.url, api_key="not-the-key", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        wrong.messages.create(model="fake-model", max_tokens=8, messages=USER)
    assert caught.value.body == {"type": "error", "error": {"type": "authentication_error", "message": "invalid API key"}}
    missing = httpx.post(server.url + "/v1/messages/count_tokens", json={"model": "fake-model", "messages": USER})
    assert missing.status_code == 401 and missing.json()["type"] == "error"
    assert missing.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(("body", "named"), [
    ({"model": "fake-model", "messages": USER}, "max_tokens: is required"),
    ({"model": "fake-model", "max_tokens": 8, "messages": USER, "frobnicate": 1}, "frobnicate: is not supported"),
    ({"model": "fake-model", "max_tokens": 8, "messages": USER, "thinking": {"type": "enabled", "budget_tokens": 1024}},
     "thinking"),
    ({"model": "fake-model", "max_tokens": 8, "messages": USER, "tools": [{"type": "web_search_20250305", "name": "w"}]},
     "tools[0].type: server tool"),
    ({"model": "fake-model", "max_tokens": 8, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]}]},
     "messages[0].content[0]: block type document is not supported"),
    ({"model": "fake-model", "max_tokens": 8, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "x", "citations_please": True}]}]},
     "messages[0].content[0].citations_please: is not supported"),
])
def test_bad_request_is_400_in_anthropic_shape_naming_the_field(server: GhostServer, upstream: FakeUpstream,
                                                                body: dict, named: str) -> None:
    response = post(server, body)
    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error"
    assert named in payload["error"]["message"]
    assert upstream.chat_requests() == []  # refused before anything ran


def test_sdk_raises_bad_request_and_not_found(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="is not supported"):
        claude.messages.create(model="fake-model", max_tokens=8, messages=USER, extra_body={"service_tier": "auto"})
    with pytest.raises(anthropic.NotFoundError) as caught:
        claude.messages.create(model="claude-nonexistent", max_tokens=8, messages=USER)
    assert caught.value.body["error"]["type"] == "not_found_error"


def test_upstream_failure_before_the_stream_is_a_status(claude: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    upstream.script(Reply(status=500))
    with pytest.raises(anthropic.APIStatusError) as caught:
        claude.messages.create(model="fake-model", max_tokens=8, messages=USER, stream=True)
    assert caught.value.status_code == 502
    assert caught.value.body["type"] == "error" and caught.value.body["error"]["type"] == "api_error"


def test_other_paths_keep_their_own_error_shapes(server: GhostServer) -> None:
    ghost_shape = httpx.post(server.url + "/v1/chat/completions", json={"messages": USER})
    assert ghost_shape.status_code == 401 and "type" not in ghost_shape.json()
    assert ghost_shape.json()["error"]["type"] == "authentication_error"


# --- count_tokens -------------------------------------------------------------------------------

def test_count_tokens_counts_the_request_as_ghost_sends_it(claude: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    bare = claude.messages.count_tokens(model="fake-model", messages=USER).input_tokens
    with_tools = claude.messages.count_tokens(model="fake-model", messages=USER, tools=[WEATHER]).input_tokens
    long_system = "Answer in the style of a ship's log, with dates. " * 40
    with_system = claude.messages.count_tokens(model="fake-model", messages=USER, system=long_system).input_tokens
    # Ghost's own system prompt and tool schemas are part of what is sent: far more than "hi"
    assert bare > 200
    assert with_tools > bare and with_system >= bare + len(long_system) // 8
    assert upstream.chat_requests() == []  # counting calls no model


def test_count_tokens_refuses_in_anthropic_shape(server: GhostServer) -> None:
    response = post(server, {"model": "fake-model", "messages": []}, path="/v1/messages/count_tokens")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "messages" in response.json()["error"]["message"]


def test_an_idle_stream_sends_pings_inside_the_message(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="late", first_delay=1.0))  # five keep-alive periods of silence
    items = sse_items(post(server, {"model": "fake-model", "max_tokens": 8, "stream": True, "messages": USER}).text)
    check_anthropic_order(items)
    names = [name for name, _ in items]
    first_block = names.index("content_block_start")
    assert names[0] == "message_start" and names[1:first_block].count("ping") >= 2


def test_encoder_notice_is_a_comment_and_usage_lands_in_message_delta() -> None:
    from ghost.api.encoders.common import ReplyInfo
    from ghost.api.protocols.anthropic.encoder import AnthropicStreamEncoder
    from ghost.events import Done, Notice, TextDelta, Usage

    encoder = AnthropicStreamEncoder(ReplyInfo(request_id="r1", model="m"))
    wire = b"".join(encoder.encode(e) for e in [TextDelta("hi"), Notice("not saved"), Usage(7, 3), Done("length")])
    text = wire.decode()
    assert ": ghost warning: [Ghost: not saved]" in text
    items = sse_items(text)
    check_anthropic_order(items)
    delta = next(data for name, data in items if name == "message_delta")
    assert delta["delta"]["stop_reason"] == "max_tokens" and delta["usage"] == {"input_tokens": 7, "output_tokens": 3}
    assert items[0][1]["message"]["id"] == "msg_r1"


BAD_BODIES = [b"[]", b'"text"', b"1", b"null", b"[1, {}]", b'{"messages": 5}', b'{"max_tokens": "x"}',
              b'{"model": 5, "max_tokens": 1, "messages": []}', b'{"max_tokens": 1, "messages": [{"role": 5}]}',
              b'{"system": {"a": 1}, "max_tokens": 1, "messages": []}', b"{", b"\xff\xfe"]


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
def test_every_bad_body_or_header_is_a_400_in_anthropic_shape_never_a_422(server: GhostServer, upstream: FakeUpstream,
                                                                          path: str) -> None:
    headers = {"x-api-key": server.api_key, "content-type": "application/json"}
    cases = [(body, headers) for body in BAD_BODIES]
    good = json.dumps({"model": "fake-model", "max_tokens": 8, "messages": USER}).encode()
    cases.append((good, {**headers, "X-Ghost-Session": "not a valid id!"}))  # the 422 the fuzzer once saw
    for body, sent_headers in cases:
        response = httpx.post(server.url + path, content=body, headers=sent_headers, timeout=30)
        assert response.status_code == 400, (body, response.status_code, response.text)
        payload = response.json()
        assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error", payload
    assert upstream.chat_requests() == []
