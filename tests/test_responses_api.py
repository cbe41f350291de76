"""The OpenAI Responses API (`/v1/responses`) with the official openai SDK against a real Ghost
and the scripted fake upstream: both reply forms, the protocol's event order, client function
tools, structured output, the stored conversation, retrieve/delete, and the errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather of a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture(scope="module")
def server(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    with GhostServer("--upstream-url", upstream.url, home=tmp_path_factory.mktemp("responses-home")) as ghost:
        yield ghost


@pytest.fixture()
def oai(server: GhostServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.api_key, max_retries=0)


def sent_upstream(upstream: FakeUpstream) -> dict[str, Any]:
    return upstream.chat_requests()[-1]["body"]


# --- the protocol's event order --------------------------------------------------------------------

# For each kind of item: the events between its output_item.added and output_item.done, in order.
ITEM_GRAMMAR = {
    "message": ["response.content_part.added", "response.output_text.delta*", "response.output_text.done",
                "response.content_part.done"],
    "reasoning_text": ["response.content_part.added", "response.reasoning_text.delta*",
                       "response.reasoning_text.done", "response.content_part.done"],
    "reasoning_summary": ["response.reasoning_summary_part.added", "response.reasoning_summary_text.delta*",
                          "response.reasoning_summary_text.done", "response.reasoning_summary_part.done"],
    "function_call": ["response.function_call_arguments.delta*", "response.function_call_arguments.done"],
}
CLOSING = {"response.completed", "response.incomplete", "response.failed"}


def _matches(kinds: list[str], grammar: list[str]) -> bool:
    position = 0
    for rule in grammar:
        name, repeated = rule.rstrip("*"), rule.endswith("*")
        if not repeated:
            if position >= len(kinds) or kinds[position] != name:
                return False
            position += 1
            continue
        while position < len(kinds) and kinds[position] == name:
            position += 1
    return position == len(kinds)


def check_order(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Assert `events` follow the Responses API's order; return the finished output items."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    assert events[-1]["type"] in CLOSING and not any(e["type"] in CLOSING for e in events[:-1])
    errors = [i for i, e in enumerate(events) if e["type"] == "error"]
    assert errors in ([], [len(events) - 2]) and (not errors or events[-1]["type"] == "response.failed")
    items, position, body = [], 2, [e for e in events[2:-1] if e["type"] != "error"]
    while body:
        added = body[0]
        assert added["type"] == "response.output_item.added", added
        end = next(i for i, e in enumerate(body) if e["type"] == "response.output_item.done")
        item, inner = body[end]["item"], body[1:end]
        assert item["id"] == added["item"]["id"] and added["output_index"] == body[end]["output_index"] == len(items)
        assert all(e["item_id"] == item["id"] and e["output_index"] == len(items) for e in inner)
        kind = item["type"] if item["type"] != "reasoning" else \
            ("reasoning_summary" if item["summary"] else "reasoning_text")
        assert _matches([e["type"] for e in inner], ITEM_GRAMMAR[kind]), [e["type"] for e in inner]
        deltas = "".join(e["delta"] for e in inner if e["type"].endswith(".delta"))
        done_text = next(e.get("text", e.get("arguments")) for e in inner if e["type"].endswith(".done")
                         and not e["type"].endswith("part.done"))
        assert deltas == done_text
        items.append(item)
        body, position = body[end + 1:], position + end + 1
    assert events[-1]["response"]["output"] == items
    return items


def without_parsed(value: Any) -> Any:
    """An SDK event as sent: the SDK adds `parsed` to the text parts it accumulates."""
    if isinstance(value, dict):
        return {k: without_parsed(v) for k, v in value.items() if k != "parsed"}
    return [without_parsed(v) for v in value] if isinstance(value, list) else value


def raw_events(server: GhostServer, body: dict[str, Any]) -> list[dict[str, Any]]:
    with httpx.stream("POST", server.url + "/v1/responses", headers=server.headers,
                      json={**body, "stream": True}, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    events = []
    for block in text.split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith(":")]
        if not lines:
            continue
        assert lines[0].startswith("event: ") and lines[1].startswith("data: ")
        event = json.loads(lines[1][len("data: "):])
        assert event["type"] == lines[0][len("event: "):]
        events.append(event)
    return events


# --- create ----------------------------------------------------------------------------------------

def test_create_answers_with_a_message_item_and_usage(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="The answer is 4."))
    response = oai.responses.create(model="fake-model", input="What is 2+2?")
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.model == "fake-model"
    assert response.output_text == "The answer is 4."
    assert [item.type for item in response.output] == ["message"]
    assert response.usage is not None and (response.usage.input_tokens, response.usage.output_tokens) == (10, 5)
    assert sent_upstream(upstream)["messages"][-1] == {"role": "user", "content": "What is 2+2?"}


def test_stream_gives_the_protocols_events_in_order(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.script(Reply(chunks=["Hel", "lo", " world"]))
    with oai.responses.stream(model="fake-model", input="hi") as stream:
        events = list(stream)
        final = stream.get_final_response()
    check_order([without_parsed(event.model_dump(mode="json", exclude_unset=True)) for event in events])
    assert [e.delta for e in events if e.type == "response.output_text.delta"] == ["Hel", "lo", " world"]
    assert final.output_text == "Hello world" and final.status == "completed"
    assert oai.responses.retrieve(final.id).output_text == "Hello world"


def test_activity_and_reasoning_are_reasoning_items_in_order(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="", reasoning="let me look",
                          tool_calls=[{"name": "scratchpad_list", "arguments": {}}]),
                    Reply(content="Nothing stored."))
    events = raw_events(server, {"input": "what is in the scratchpad?"})
    items = check_order(events)
    assert [item["type"] for item in items] == ["reasoning", "reasoning", "message"]
    assert items[0]["content"][0] == {"type": "reasoning_text", "text": "let me look"}
    assert "scratchpad_list" in items[1]["summary"][0]["text"]
    assert items[2]["content"][0]["text"] == "Nothing stored."
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["usage"]["total_tokens"] == 30


def test_non_streamed_object_equals_the_streamed_one(server: GhostServer, upstream: FakeUpstream) -> None:
    script = (Reply(content="", tool_calls=[{"name": "scratchpad_list", "arguments": {}}]), Reply(content="Done."))
    upstream.script(*script)
    streamed = raw_events(server, {"input": "same"})[-1]["response"]
    upstream.script(*script)
    collected = httpx.post(server.url + "/v1/responses", headers=server.headers, json={"input": "same"}).json()

    def shape(response: dict[str, Any]) -> Any:
        return [{k: v for k, v in item.items() if k != "id"} for item in response["output"]], response["usage"]

    assert shape(streamed) == shape(collected)


def test_instructions_sampling_and_text_format_reach_the_upstream(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
              "additionalProperties": False}
    # The tool round goes without the format (its text is reasoning); the answering call carries it.
    upstream.script(Reply(content="Two and two make four."), Reply(content='{"n": 4}'))
    response = oai.responses.create(
        input="two plus two", instructions="Answer in JSON.", temperature=0.2, top_p=0.9, max_output_tokens=50,
        text={"format": {"type": "json_schema", "name": "sum", "schema": schema, "strict": True}})
    body = sent_upstream(upstream)
    assert body["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "sum", "schema": schema, "strict": True}}
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.2, 0.9, 50)
    assert {"role": "system", "content": "Answer in JSON."} in body["messages"]
    assert json.loads(response.output_text) == {"n": 4}
    assert response.text.format.type == "json_schema" and response.instructions == "Answer in JSON."
    upstream.script(Reply(content="{}"))
    oai.responses.create(input="json please", text={"format": {"type": "json_object"}})
    assert sent_upstream(upstream)["response_format"] == {"type": "json_object"}


def test_input_items_become_messages(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="A cat."))
    oai.responses.create(input=[
        {"role": "developer", "content": "Be brief."},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}]},
    ])
    messages = sent_upstream(upstream)["messages"]
    assert {"role": "developer", "content": "Be brief."} in messages
    assert messages[-1] == {"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}]}


# --- client function tools -------------------------------------------------------------------------

def test_function_tool_round_trip(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="", tool_calls=[{"name": "get_weather", "arguments": {"city": "Lima"}}]))
    first = oai.responses.create(input="Weather in Lima?", tools=[WEATHER])
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and json.loads(calls[0].arguments) == {"city": "Lima"}
    assert sent_upstream(upstream)["tools"][-1]["function"]["name"] == "get_weather"
    upstream.script(Reply(content="Sunny in Lima."))
    second = oai.responses.create(previous_response_id=first.id, tools=[WEATHER], input=[
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": '{"sky": "sunny"}'}])
    assert second.output_text == "Sunny in Lima." and second.previous_response_id == first.id
    messages = sent_upstream(upstream)["messages"]
    assistant = next(m for m in messages if m.get("tool_calls"))
    assert assistant["tool_calls"][0]["id"] == calls[0].call_id
    assert messages[-1] == {"role": "tool", "tool_call_id": calls[0].call_id, "content": '{"sky": "sunny"}'}


def test_function_call_items_sent_back_without_previous_id(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="Cloudy."))
    oai.responses.create(tools=[WEATHER], input=[
        {"role": "user", "content": "Weather in Oslo?"},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "thinking"}]},
        {"type": "function_call", "call_id": "call_9", "name": "get_weather", "arguments": '{"city":"Oslo"}'},
        {"type": "function_call_output", "call_id": "call_9", "output": "cloudy"}])
    messages = sent_upstream(upstream)["messages"]
    assert messages[-2:] == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_9", "content": "cloudy"}]
    assert not any("thinking" in json.dumps(m) for m in messages)


def test_streamed_function_call_events(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="", tool_calls=[{"name": "get_weather", "arguments": {"city": "Rome"}}]))
    events = raw_events(server, {"input": "Rome?", "tools": [WEATHER]})
    items = check_order(events)
    assert [(i["type"], i["name"], json.loads(i["arguments"])) for i in items] == [
        ("function_call", "get_weather", {"city": "Rome"})]


# --- state -------------------------------------------------------------------------------------------

def test_previous_response_id_continues_the_conversation(oai: openai.OpenAI, upstream: FakeUpstream,
                                                          server: GhostServer) -> None:
    upstream.script(Reply(content="Hi Ada."), Reply(content="Your name is Ada."))
    first = oai.responses.create(input="My name is Ada.", instructions="first instructions")
    second = oai.responses.with_raw_response.create(input="What is my name?", previous_response_id=first.id)
    messages = sent_upstream(upstream)["messages"]
    said = [(m["role"], m["content"]) for m in messages if m["role"] in ("user", "assistant")]
    assert said == [("user", "My name is Ada."), ("assistant", "Hi Ada."), ("user", "What is my name?")]
    assert not any(m.get("content") == "first instructions" for m in messages)  # not carried over
    session = second.headers["x-ghost-session"]
    history = httpx.get(f"{server.url}/api/sessions/{session}", headers=server.headers).json()
    assert [m["content"] for m in history["messages"]][-1] == "Your name is Ada."
    assert second.parse().output_text == "Your name is Ada."


def test_retrieve_and_delete(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="kept"))
    created = oai.responses.create(input="keep this", metadata={"topic": "test"})
    fetched = oai.responses.retrieve(created.id)
    assert fetched.model_dump() == created.model_dump() and fetched.metadata == {"topic": "test"}
    oai.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        oai.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        oai.responses.create(input="more", previous_response_id=created.id)


def test_store_false_keeps_nothing(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="forgotten"))
    raw = oai.responses.with_raw_response.create(input="do not keep", store=False)
    response = raw.parse()
    assert response.store is False and "x-ghost-session" not in raw.headers
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(response.id)


# --- errors ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "named"), [
    ({"input": "x", "background": True, "service_tier": "flex"}, "background, service_tier"),
    ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0]"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input[0].content"),
    ({"input": [{"role": "user", "content": "x", "colour": "red"}]}, "input[0].colour"),
    ({"input": "x", "text": {"format": {"type": "json_schema"}}}, "text.format"),
    ({"input": "x", "include": ["reasoning.encrypted_content", "file_search_call.results"]},
     "include: unsupported value(s): file_search_call.results"),
    ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": []}, "input"),
    ({}, "input"),
])
def test_bad_requests_are_400s_naming_the_field(server: GhostServer, body: dict[str, Any], named: str) -> None:
    response = httpx.post(server.url + "/v1/responses", headers=server.headers, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and named in error["message"]


def test_a_function_call_must_be_answered(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="", tool_calls=[{"name": "get_weather", "arguments": {"city": "Lima"}}]))
    asked = oai.responses.create(input="Weather in Lima?", tools=[WEATHER])
    sent = len(upstream.chat_requests())
    with pytest.raises(openai.BadRequestError, match="no function_call_output for call_id"):
        oai.responses.create(previous_response_id=asked.id, tools=[WEATHER], input="never mind")
    with pytest.raises(openai.BadRequestError, match="answers no function_call"):
        oai.responses.create(input=[{"role": "user", "content": "x"},
                                    {"type": "function_call_output", "call_id": "call_nobody", "output": "1"}])
    assert len(upstream.chat_requests()) == sent  # refused before the upstream saw anything


def test_sdk_sees_a_bad_request_error(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="unsupported field"):
        oai.responses.create(input="x", extra_body={"nonsense": 1})


def test_key_required(server: GhostServer) -> None:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.responses.create(input="hi")
    assert httpx.get(server.url + "/v1/responses/resp_x").status_code == 401
    assert httpx.delete(server.url + "/v1/responses/resp_x").status_code == 401


def test_unknown_model_is_404(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="not found"):
        oai.responses.create(model="no-such-model", input="hi")


def test_upstream_failure_mid_stream_is_error_then_failed(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(chunks=["partial", " answer", " more"], fail_after=2))
    events = raw_events(server, {"input": "break"})
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2]["message"].startswith("upstream connection lost")
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["message"] == events[-2]["message"]
    items = check_order(events)  # the answer so far is closed before the error
    assert items[0]["content"][0]["text"].startswith("partial")


def test_cut_by_the_token_limit_is_incomplete(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="cut sho", finish_reason="length"))
    events = raw_events(server, {"input": "long story", "max_output_tokens": 3})
    check_order(events)
    final = events[-1]
    assert final["type"] == "response.incomplete"
    assert final["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert sent_upstream(upstream)["max_tokens"] == 3


@pytest.mark.parametrize("body", [b"[]", b'"text"', b"1", b"null", b'[{"input": "x"}]', b"{", b"\xff\xfe",
                                  b'{"input": 5}', b'{"input": [{"type": "message", "role": 5}]}',
                                  b'{"input": "x", "tools": [{"type": "function"}]}', b'{"input": "x", "text": 3}'])
def test_every_bad_body_is_a_400_never_a_422(server: GhostServer, upstream: FakeUpstream, body: bytes) -> None:
    response = httpx.post(server.url + "/v1/responses", content=body, timeout=30,
                          headers={**server.headers, "content-type": "application/json"})
    assert response.status_code == 400, (body, response.text)
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert upstream.chat_requests() == []
