"""The Responses API builder on its own: which events make which output items."""

from __future__ import annotations

from ghost.api.protocols.responses.encoder import ResponseBuilder
from ghost.events import ClientToolCall, Done, Error, TextDelta, ToolActivity, ToolCall, Usage


def build(*events: object, show_activity: bool = True) -> tuple[ResponseBuilder, list[dict]]:
    builder = ResponseBuilder("resp_1", "m", 0, {}, show_activity=show_activity)
    out = builder.start()
    for event in events:
        out += builder.feed(event)
    return builder, out


def test_items_follow_the_turn() -> None:
    builder, _ = build(TextDelta("Let me check. "), ToolActivity("list_files", "start", "→ list_files"),
                       ToolActivity("list_files", "end", "← 3 files"), TextDelta("Three"), TextDelta(" files."),
                       Usage(3, 4), Done("stop"))
    output = builder.response["output"]
    assert [item["type"] for item in output] == ["message", "reasoning", "message"]
    assert output[1]["summary"] == [{"type": "summary_text", "text": "→ list_files\n← 3 files\n"}]
    assert output[2]["content"][0]["text"] == "Three files."
    assert builder.response["status"] == "completed" and builder.response["usage"]["total_tokens"] == 7
    assert builder.final()["type"] == "response.completed"


def test_activity_hidden_when_the_setting_says_none() -> None:
    builder, events = build(ToolActivity("list_files", "start", "→ list_files"), TextDelta("ok"), Done("stop"),
                            show_activity=False)
    assert [item["type"] for item in builder.response["output"]] == ["message"]
    assert not any("reasoning" in event["type"] for event in events)
    shown, _ = build(ToolActivity("list_files", "start", "→ list_files"), TextDelta("ok"), Done("stop"))
    assert [item["type"] for item in shown.response["output"]] == ["reasoning", "message"]  # the probe sees it


def test_client_calls_end_the_turn_as_function_call_items() -> None:
    calls = (ToolCall("call_1", "f", '{"a":1}'), ToolCall("call_2", "g", "{}"))
    builder, _ = build(ClientToolCall(calls), Done("tool_calls"))
    assert [(i["type"], i["call_id"], i["status"]) for i in builder.response["output"]] == [
        ("function_call", "call_1", "completed"), ("function_call", "call_2", "completed")]
    assert builder.reply_message() == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
        {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}


def test_failure_closes_the_open_item_then_fails() -> None:
    builder, _ = build(TextDelta("half"))
    events = builder.fail(Error("upstream connection lost", "upstream_error"))
    assert [e["type"] for e in events] == ["response.output_text.done", "response.content_part.done",
                                           "response.output_item.done", "error", "response.failed"]
    assert builder.response["status"] == "failed" and builder.response["output"][0]["content"][0]["text"] == "half"
    assert [e["sequence_number"] for e in events] == list(range(events[0]["sequence_number"],
                                                                events[0]["sequence_number"] + 5))
