"""Request normalisation: both message shapes, options, tools, session ids (pure functions)."""

from __future__ import annotations

import pytest

from ghost.api import bodies
from ghost.api.known_messages import known_messages
from ghost.api.openai_request import chat_request, openai_messages, parsed_chat
from ghost.api.session_id import session_id
from ghost.errors import Unprocessable


def parse_chat_request(body: dict, *, default_stream: bool, session_header: str | None = None):
    return chat_request(bodies.parsed(bodies.ChatRequest, body), body, default_stream=default_stream,
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


# --- Ollama's format and options, the parameter rule (ghost.api.chat_params) ------------------------


def test_ollama_format_json_is_json_mode() -> None:
    assert parse(format="json").sampling["response_format"] == {"type": "json_object"}


def test_ollama_format_schema_is_a_json_schema_response_format() -> None:
    schema = {"title": "Pet", "type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    assert parse(format=schema).sampling["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "Pet", "schema": schema, "strict": False}}
    closed = {**schema, "additionalProperties": False, "title": "not a name!"}
    assert parse(format=closed).sampling["response_format"]["json_schema"] == {
        "name": "response", "schema": closed, "strict": True}


def test_openai_response_format_wins_over_ollama_format() -> None:
    given = {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}
    assert parse(format="json", response_format=given).sampling["response_format"] == given


@pytest.mark.parametrize("bad", ["yaml", 5, ["json"]])
def test_a_format_that_is_neither_json_nor_a_schema_is_refused(bad: object) -> None:
    with pytest.raises(Exception) as caught:
        parse(format=bad)
    assert "format" in str(getattr(caught.value, "message", caught.value))


def test_ollama_sampling_options_are_passed_on() -> None:
    options = {"top_k": 20, "min_p": 0.05, "repeat_penalty": 1.1, "typical_p": 0.9, "repeat_last_n": 64,
               "mirostat": 2, "mirostat_tau": 5.0, "mirostat_eta": 0.1, "tfs_z": 1.0, "num_keep": 4}
    sampling = parse(options=options).sampling
    assert sampling == {"top_k": 20, "min_p": 0.05, "repeat_penalty": 1.1, "repetition_penalty": 1.1,
                        "typical_p": 0.9, "repeat_last_n": 64, "mirostat": 2, "mirostat_tau": 5.0,
                        "mirostat_eta": 0.1, "tfs_z": 1.0, "n_keep": 4}


def test_openai_parameters_an_agent_applies_are_kept() -> None:
    given = {"parallel_tool_calls": False, "reasoning_effort": "low", "top_k": 3, "min_p": 0.1, "n": 1,
             "logprobs": False}
    sampling = parse(**given).sampling
    assert sampling == {"parallel_tool_calls": False, "reasoning_effort": "low", "top_k": 3, "min_p": 0.1}
    assert parse(**given).refused is None


@pytest.mark.parametrize("field,value", [("n", 2), ("logprobs", True), ("top_logprobs", 3),
                                         ("functions", [{"name": "f"}]), ("modalities", ["text", "audio"]),
                                         ("prediction", {"type": "content", "content": "x"})])
def test_parameters_an_agent_cannot_apply_are_named(field: str, value: object) -> None:
    refused = parse(**{field: value}).refused
    assert refused is not None and refused.startswith(f"{field}: not supported on an agent model")


def test_ollama_load_options_are_refused_by_name() -> None:
    assert parse(options={"num_gpu": 8}).refused.startswith("options.num_gpu: not supported")


def test_num_ctx_is_the_turns_context_window_not_a_sampling_field() -> None:
    request = parse(options={"num_ctx": 4096, "top_k": 5})
    assert request.refused is None and request.context_window == 4096
    assert "num_ctx" not in request.sampling and "num_ctx" not in (request.relay or {})
    assert parse().context_window is None


def test_the_plain_relay_keeps_every_field() -> None:
    given = {"n": 3, "logprobs": True, "top_logprobs": 2, "parallel_tool_calls": False, "reasoning_effort": "high",
             "some_server_extension": {"a": 1}, "temperature": 0.5}
    request = parse(**given, session_id="s1", options={"top_k": 7}, format="json", keep_alive="5m")
    assert request.relay == {**given, "top_k": 7, "response_format": {"type": "json_object"}}


@pytest.mark.parametrize("field,value", [("suffix", "end"), ("raw", True), ("template", "{{ .Prompt }}"),
                                         ("context", [1, 2])])
def test_generate_refuses_raw_completion_fields_by_name(field: str, value: object) -> None:
    from ghost.api.openai_request import generate_request
    from ghost.errors import BadRequest
    payload = {"model": "m", "prompt": "hi", field: value}
    with pytest.raises(BadRequest, match=f"^{field}: not supported"):
        generate_request(bodies.parsed(bodies.GenerateRequest, payload), payload)


# --- messages validated once (ghost.api.known_messages) -------------------------------------------------


def _through_memo(payload: dict, workspace: str):
    body, known = parsed_chat(payload, workspace)
    return body, chat_request(body, payload, default_stream=True, known=known, workspace=workspace)


def test_a_resent_conversation_validates_only_its_new_messages() -> None:
    known_messages.clear()
    first = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    body, chat = _through_memo({"messages": first}, "alice")
    assert len(body.messages) == 2  # nothing known yet: all validated
    reply = {"role": "assistant", "content": "<think>hmm</think>Hello."}
    resent = [*first, reply, {"role": "user", "content": "more"},
              {"role": "tool", "content": "a tool's result"}]  # a tool message is never taken as known
    body, chat = _through_memo({"messages": resent}, "alice")
    assert len(body.messages) == 3  # the two seen on the first turn were not validated again
    _, again = _through_memo({"messages": resent}, "alice")
    assert [m.role for m in parsed_chat({"messages": resent}, "alice")[0].messages] == ["tool"]
    # What the memo gives is what validating and converting the whole list gives.
    whole = parse_chat_request({"messages": resent}, default_stream=True).messages
    def without_ids(messages: list[dict]) -> list[dict]:  # a tool message's made-up call id differs each time
        return [{k: v for k, v in m.items() if k != "tool_call_id"} for m in messages]

    assert without_ids(chat.messages) == without_ids(again.messages) == without_ids(whole)
    assert whole[2] == {"role": "assistant", "content": "Hello."}
    # Each workspace has its own memo: another user's first turn validates everything.
    assert len(parsed_chat({"messages": resent}, "bob")[0].messages) == 5


def test_a_bad_message_after_known_ones_is_named_at_its_own_position() -> None:
    known_messages.clear()
    good = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello."}]
    _through_memo({"messages": good}, "alice")
    with pytest.raises(Unprocessable) as caught:
        parsed_chat({"messages": [*good, {"role": "wizard", "content": "x"}]}, "alice")
    assert caught.value.message.startswith("messages[2].role")
    with pytest.raises(Unprocessable) as caught:  # another field wrong: named as without the memo
        parsed_chat({"messages": [*good, {"role": "user", "content": "x"}], "stream": "yes"}, "alice")
    assert caught.value.message.startswith("stream")


def test_the_memo_of_known_messages_stays_within_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    from ghost.api import known_messages as module

    from ghost import plainprefix

    monkeypatch.setattr(module, "MAX_KNOWN_CHARS", 100)
    monkeypatch.setattr(plainprefix, "MAX_CHARS", 100)  # the conversations' memo too: 400 characters are past it
    memo = module.KnownMessages()  # after the patches: the conversations' memo reads its bound when made
    raw = [{"role": "user", "content": f"{i:02d}" + "x" * 18} for i in range(20)]  # 20 characters each
    memo.learn("w", raw, [dict(m) for m in raw])
    assert memo._chars <= 100 and len(memo._converted) == 5
    assert memo.leading("w", raw[-5:]) == raw[-5:] and memo.leading("w", raw[:1]) == []
    long_text = {"role": "user", "content": "y" * (module.MAX_KNOWN_TEXT + 1)}
    memo.learn("w", [long_text], [dict(long_text)])
    assert memo.leading("w", [long_text]) == []
