"""Request normalisation: both message shapes, options, tools, session ids (pure functions)."""

from __future__ import annotations

import pytest

from ghost.api import bodies
from ghost.api.openai_request import chat_request, openai_messages
from ghost.api.session_id import session_id
from ghost.errors import Unprocessable


def parse_chat_request(body: dict, *, default_stream: bool, session_header: str | None = None):
    return chat_request(bodies.parsed(bodies.ChatRequest, body), default_stream=default_stream,
                        session_header=session_header)


def normalise_messages(messages: list) -> list[dict]:
    return openai_messages(bodies.parsed(bodies.ChatRequest, {"messages": messages}).messages)


def parse(**body: object):
    return parse_chat_request({"messages": [{"role": "user", "content": "x"}], **body}, default_stream=True)


def test_defaults() -> None:
    request = parse()
    # No session id asked for: the chat service picks one (the conversation this continues, or a new one);
    # no model named (""): the chat service answers with the default one.
    assert (request.model, request.stream, request.session_id, request.client_tools) == ("", True, None, [])


def test_ollama_num_predict_minus_one_means_no_limit() -> None:
    assert "max_tokens" not in parse(options={"num_predict": -1}).sampling


def test_openai_field_wins_over_ollama_option() -> None:
    assert parse(temperature=0.2, options={"temperature": 0.9}).sampling["temperature"] == 0.2


def test_session_header_used_when_body_has_none() -> None:
    request = parse_chat_request({"messages": [{"role": "user", "content": "x"}]}, default_stream=False,
                                 session_header="from-header")
    assert request.session_id == "from-header"


@pytest.mark.parametrize("bad", ["", "a" * 129, "../x", "a b", "x/y"])
def test_session_ids_are_validated(bad: str) -> None:
    if bad == "":
        assert session_id(bad) == "default"
    else:
        with pytest.raises(Unprocessable):
            session_id(bad)


def test_ollama_tool_results_pair_with_their_calls_in_order() -> None:
    messages = normalise_messages([
        {"role": "user", "content": "weather in two cities"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "w", "arguments": {"city": "A"}}},
            {"function": {"name": "w", "arguments": {"city": "B"}}}]},
        {"role": "tool", "content": "sunny", "tool_name": "w"},
        {"role": "tool", "content": "rainy", "tool_name": "w"},
    ])
    first, second = messages[1]["tool_calls"]
    assert first["function"]["arguments"] == '{"city": "A"}'
    assert {messages[2]["tool_call_id"], messages[3]["tool_call_id"]} == {first["id"], second["id"]}
    assert messages[2]["tool_call_id"] != messages[3]["tool_call_id"]


def test_assistant_reasoning_is_dropped() -> None:
    out = normalise_messages([{"role": "assistant", "content": "<think>x</think>y", "thinking": "t",
                               "reasoning_content": "r"}])
    assert out == [{"role": "assistant", "content": "y"}]


def test_jpeg_and_data_url_images() -> None:
    jpeg = "/9j/4AAQSkZJRgABAQAAAQABAAD"
    out = normalise_messages([{"role": "user", "content": "x", "images": [jpeg, "data:image/gif;base64,R0lG"]}])
    urls = [part["image_url"]["url"] for part in out[0]["content"][1:]]
    assert urls == [f"data:image/jpeg;base64,{jpeg}", "data:image/gif;base64,R0lG"]


@pytest.mark.parametrize("body", [
    {"options": "fast"}, {"max_tokens": 1.5}, {"seed": True}, {"model": 3}, {"tools": {"a": 1}},
    {"messages": [{"role": "user", "content": 5}]}, {"messages": [{"role": "user", "images": "x"}]},
    # Found by schema fuzzing (each was a 500): non-base64 images, tool_calls that is not a list.
    {"messages": [{"role": "user", "images": ["\u00aa"]}]}, {"messages": [{"role": "user", "images": ["ab!c"]}]},
    {"messages": [{"role": "assistant", "tool_calls": 5}]}, {"messages": [{"role": "assistant", "tool_calls": True}]},
    # ... and call ids that are not strings (a list one broke the pairing of tool results with calls).
    {"messages": [{"role": "tool", "tool_call_id": [None]}, {"role": "tool", "tool_call_id": []}]},
    {"messages": [{"role": "assistant", "tool_calls": [{"id": [1], "function": {"name": "f"}}]},
                  {"role": "tool", "content": "r"}]},
])
def test_invalid_fields_are_422(body: dict) -> None:
    with pytest.raises(Unprocessable):
        parse(**body)


def test_base64_images_may_hold_line_breaks_and_be_too_short_to_sniff() -> None:
    out = normalise_messages([{"role": "user", "content": "x", "images": ["iVBORw0K\nGgo=", "a"]}])
    urls = [part["image_url"]["url"] for part in out[0]["content"][1:]]
    assert urls == ["data:image/png;base64,iVBORw0K\nGgo=", "data:image/jpeg;base64,a"]


@pytest.mark.parametrize("body, message", [
    ({"messages": []}, "messages: must be a non-empty list"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content: must be a string or a list of parts"),
    ({"messages": [{"role": "user", "images": ["ab!c"]}]}, "messages[0].images[0]: must be base64 (or a data: URL)"),
    ({"temperature": "hot"}, "temperature: must be a number"),
    ({"stream": "yes"}, "stream: must be true or false"),
    ({"seed": 1.5}, "seed: must be an integer"),
    ({"session_id": "../etc"}, "session_id: 1-128 characters of letters, digits and . _ : -"),
    ({"tools": [{"type": "function"}]}, "tools[0].function: is required"),
])
def test_a_refusal_names_the_field_and_the_rule(body: dict, message: str) -> None:
    with pytest.raises(Unprocessable) as refused:
        parse(**body)
    assert refused.value.message == message


def test_what_is_passed_on_keeps_the_fields_ghost_does_not_know() -> None:
    part = {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}
    tool = {"type": "function", "function": {"name": "f", "strict": True, "parameters": {"type": "object"}}}
    request = parse(messages=[{"role": "user", "content": [part]}], tools=[tool], temperature=1)
    assert request.messages[0]["content"] == [part]
    assert request.client_tools == [tool]
    assert request.sampling == {"temperature": 1} and isinstance(request.sampling["temperature"], int)
