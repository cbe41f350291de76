"""Encoders are pure functions of events: their edge cases, named after behaviours."""

from __future__ import annotations

import json

from ghost.api.encoders.common import CollectedTurn, ReplyInfo
from ghost.api.encoders.ollama_ndjson import OllamaStreamEncoder, chat_object, generate_object
from ghost.api.encoders.openai_sse import OpenAIStreamEncoder, completion_object
from ghost.events import (ClientToolCall, Done, Error, Heartbeat, ReasoningDelta, TextDelta, ToolActivity,
                                ToolCall, Usage)

INFO = ReplyInfo(request_id="r1", model="m", include_usage=True)


def sse_payloads(data: bytes) -> list[object]:
    out: list[object] = []
    for block in data.decode().split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                body = line[6:]
                out.append(body if body == "[DONE]" else json.loads(body))
    return out


def test_stream_role_only_on_first_chunk() -> None:
    encoder = OpenAIStreamEncoder(INFO)
    first = sse_payloads(encoder.encode(TextDelta("a")))
    second = sse_payloads(encoder.encode(TextDelta("b")))
    assert first[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert first[1]["choices"][0]["delta"] == {"content": "a"}
    assert second == [{**second[0], "choices": [{"index": 0, "delta": {"content": "b"}, "finish_reason": None}]}]


def test_stream_tool_calls_finish_reason() -> None:
    encoder = OpenAIStreamEncoder(INFO)
    call = ToolCall("c1", "f", '{"x": 1}')
    out = sse_payloads(encoder.encode(ClientToolCall((call,))) + encoder.encode(Done("tool_calls")))
    delta_calls = out[1]["choices"][0]["delta"]["tool_calls"]
    assert delta_calls == [{"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}]
    assert out[2]["choices"][0]["finish_reason"] == "tool_calls" and out[-1] == "[DONE]"


def test_stream_usage_chunk_after_finish_when_asked() -> None:
    encoder = OpenAIStreamEncoder(INFO)
    out = sse_payloads(encoder.encode(Usage(3, 4)) + encoder.encode(Done("stop")))
    assert out[-2]["choices"] == [] and out[-2]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_stream_usage_chunk_absent_when_not_asked() -> None:
    encoder = OpenAIStreamEncoder(ReplyInfo(request_id="r", model="m"))
    out = sse_payloads(encoder.encode(Usage(3, 4)) + encoder.encode(Done("stop")))
    assert all("usage" not in p for p in out if isinstance(p, dict))


def test_tool_activity_is_reasoning_plus_comment_never_content() -> None:
    data = OpenAIStreamEncoder(INFO).encode(ToolActivity("execute", "start", "→ execute x"))
    assert b": ghost tool start execute" in data
    deltas = [p["choices"][0]["delta"] for p in sse_payloads(data)]
    assert deltas[-1] == {"reasoning_content": "→ execute x\n"}
    assert all(not d.get("content") for d in deltas)


def test_tool_activity_hidden_keeps_only_the_comment() -> None:
    hidden = ReplyInfo(request_id="r", model="m", show_activity=False)
    encoder = OpenAIStreamEncoder(hidden)
    encoder.encode(TextDelta("x"))
    assert encoder.encode(ToolActivity("execute", "start", "t")) == b": ghost tool start execute\n\n"
    assert OllamaStreamEncoder(hidden).encode(ToolActivity("execute", "start", "t")) == b""


def test_error_in_band_then_done_marker() -> None:
    data = OpenAIStreamEncoder(INFO).encode(Error("boom", "upstream_error")).decode()
    assert data == 'event: error\ndata: {"error":{"message":"boom","type":"upstream_error"}}\n\ndata: [DONE]\n\n'


def test_heartbeat_is_a_comment_in_sse_and_nothing_in_ndjson() -> None:
    assert OpenAIStreamEncoder(INFO).encode(Heartbeat()) == b": keep-alive\n\n"
    assert OllamaStreamEncoder(INFO).encode(Heartbeat()) == b""


def test_ndjson_reasoning_goes_to_thinking() -> None:
    line = json.loads(OllamaStreamEncoder(INFO).encode(ReasoningDelta("hmm")))
    assert line["message"] == {"role": "assistant", "content": "", "thinking": "hmm"} and line["done"] is False


def test_ndjson_tool_call_arguments_are_objects() -> None:
    call = ClientToolCall((ToolCall("c", "f", '{"a": 2}'), ToolCall("d", "g", "not json")))
    line = json.loads(OllamaStreamEncoder(INFO).encode(call))
    assert line["message"]["tool_calls"] == [{"function": {"name": "f", "arguments": {"a": 2}}},
                                             {"function": {"name": "g", "arguments": {"arguments": "not json"}}}]


def test_ndjson_final_line_has_counters_only_when_known() -> None:
    encoder = OllamaStreamEncoder(INFO)
    encoder.encode(Usage(11, 22))
    final = json.loads(encoder.encode(Done("stop")))
    assert final["done"] is True and (final["prompt_eval_count"], final["eval_count"]) == (11, 22)
    unknown = json.loads(OllamaStreamEncoder(INFO).encode(Done("stop")))
    assert "eval_count" not in unknown and "total_duration" in unknown


def test_ndjson_generate_mode_uses_response() -> None:
    encoder = OllamaStreamEncoder(INFO, "generate")
    assert json.loads(encoder.encode(TextDelta("x")))["response"] == "x"
    assert json.loads(encoder.encode(Done("stop")))["response"] == ""


def test_ndjson_error_is_answer_text_then_the_error_line() -> None:
    shown, final = OllamaStreamEncoder(INFO).encode(Error("bad", "t")).splitlines()
    assert json.loads(shown)["message"] == {"role": "assistant", "content": "\n\n[Ghost error: bad]"}
    assert json.loads(final) == {"error": "bad"}


def collected(*events: object) -> CollectedTurn:
    turn = CollectedTurn()
    for event in events:
        turn.add(event, show_activity=True)  # type: ignore[arg-type]
    return turn


def test_non_streaming_content_is_null_only_with_tool_calls() -> None:
    with_calls = completion_object(collected(ClientToolCall((ToolCall("c", "f", "{}"),)), Done("tool_calls")), INFO)
    assert with_calls["choices"][0]["message"]["content"] is None
    empty = completion_object(collected(Done("stop")), INFO)
    assert empty["choices"][0]["message"]["content"] == "" and "usage" not in empty


def test_non_streaming_collects_activity_as_reasoning() -> None:
    turn = collected(ToolActivity("x", "start", "→ x"), TextDelta("ok"), Usage(1, 2), Done("stop"))
    body = completion_object(turn, INFO)
    assert body["choices"][0]["message"]["reasoning_content"] == "→ x\n"
    assert body["usage"]["total_tokens"] == 3


def test_api_chat_object_has_both_shapes_and_generate_has_response() -> None:
    turn = collected(TextDelta("hi"), Usage(1, 2), Done("stop"))
    both = chat_object(turn, INFO)
    assert both["message"]["content"] == "hi" and both["choices"][0]["message"]["content"] == "hi"
    assert both["done"] is True and both["eval_count"] == 2
    assert generate_object(turn, INFO)["response"] == "hi"


def test_stream_chunks_are_the_bytes_of_the_whole_chunk_encoded() -> None:
    # Each chunk's head is encoded once per reply: it must stay what encoding the whole chunk gives.
    info = ReplyInfo(request_id='r"1\u00e9', model="m\u00fcdel \"x\"", created=1700000000)
    encoder = OpenAIStreamEncoder(info)
    events = [TextDelta("h\u00e9llo \"q\" \n \u2028 \U0001f600"), ReasoningDelta("why"), Done("stop")]
    deltas = [{"role": "assistant", "content": ""}, {"content": events[0].text}, {"reasoning_content": "why"}, {}]
    finishes = [None, None, None, "stop"]
    expected = b"".join(
        b"data: " + json.dumps({"id": info.completion_id, "object": "chat.completion.chunk", "created": info.created,
                                "model": info.model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]},
                               ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
        for delta, finish in zip(deltas, finishes)) + b"data: [DONE]\n\n"
    assert b"".join(encoder.encode(event) for event in events) == expected
