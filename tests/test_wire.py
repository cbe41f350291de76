"""The upstream chat wire's pieces on their own (ghost.llm.wire): request bodies byte for byte what
json.dumps makes, each tool schema encoded once; the stream's chunks read by network read."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ghost.errors import UpstreamError
from ghost.llm.bounds import ReplyBounds, UpstreamTooLarge
from ghost.llm.wire import DONE, ChunkReader, RequestBodies

BOUNDS = ReplyBounds(reply_chars=10_000, tool_call_chars=10_000, tool_calls=8, json_depth=16)


def tool(name: str, parameters: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    function = {"name": name, "description": f"the {name} tool — ünïcode", "parameters": parameters or {
        "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}
    return {"type": "function", "function": {**function, **extra}}


def reference(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def payload(tools: list[Any], **more: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
            "stream": True, "tools": tools, "tool_choice": "auto", **more}


@pytest.mark.parametrize("tools", [
    [tool("read"), tool("write")],
    [],
    [tool("read", strict=True)],  # a key the memo does not know: encoded afresh
    [{"type": "function", "function": {"description": "first", "name": "odd_order", "parameters": {}}}],
    [{"function": {"name": "type_last"}, "type": "function"}],
    [{"type": "function", "function": {"name": "no_parameters"}}],
    [{"type": "function", "function": {"name": 5, "parameters": []}}, "not a tool", 3, None],
])
def test_bodies_are_what_json_dumps_makes(tools: list[Any]) -> None:
    bodies = RequestBodies()
    for _ in range(2):  # the second time from the memo
        assert bodies.encode(payload(tools)) == reference(payload(tools))
    no_tools = {"model": "m", "messages": [], "temperature": 0.5}
    assert bodies.encode(no_tools) == reference(no_tools)


def test_each_schema_is_encoded_once_and_a_changed_one_again() -> None:
    bodies = RequestBodies()
    read, write = tool("read"), tool("write")
    bodies.encode(payload([read, write]))
    assert len(bodies._tools) == 2
    again = [tool("read", read["function"]["parameters"]), tool("write", write["function"]["parameters"])]
    assert bodies.encode(payload(again)) == reference(payload(again))
    assert len(bodies._tools) == 2  # new dicts around the same parameters: found, not encoded again
    renamed = tool("read2", read["function"]["parameters"])
    new_parameters = tool("read", {"type": "object", "properties": {}})
    assert bodies.encode(payload([renamed, new_parameters])) == reference(payload([renamed, new_parameters]))
    assert len(bodies._tools) == 4


def test_the_memo_is_bounded() -> None:
    bodies = RequestBodies(entries=3)
    for i in range(10):
        one = [tool(f"t{i}")]
        assert bodies.encode(payload(one)) == reference(payload(one))
    assert len(bodies._tools) == 3


def test_a_body_that_is_not_json_is_an_upstream_error() -> None:
    bodies = RequestBodies()
    with pytest.raises(UpstreamError, match="not valid JSON"):
        bodies.encode(payload([tool("nan", {"type": "number", "default": float("nan")})]))
    with pytest.raises(UpstreamError, match="not valid JSON"):
        bodies.encode(payload([tool("read")], temperature=float("inf")))
    with pytest.raises(UpstreamError, match="not valid JSON"):
        bodies.encode(payload([tool("read")], messages=[{"role": "user", "content": "\udcff"}]))
    assert not any(b"nan" in encoded for _, encoded in bodies._tools.values())


def chunks(reader: ChunkReader, piece: bytes | None) -> list[Any]:
    events = reader.close() if piece is None else reader.feed(piece)
    return [reader.parse(event) for event in events]


def test_chunks_come_by_read_each_parsed_once() -> None:
    reader = ChunkReader(BOUNDS)
    assert chunks(reader, b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: {"c"') == [{"a": 1}, {"b": 2}]
    assert chunks(reader, b':3}\n\n: comment\n\nevent: other\ndata: {"x":1}\n\ndata:\n\ndata: [DONE]\n\n') == [
        {"c": 3}, DONE]
    assert chunks(reader, None) == []


def test_an_error_event_and_an_unterminated_last_event() -> None:
    reader = ChunkReader(BOUNDS)
    assert chunks(reader, b'event: error\ndata: {"message":"boom"}\n\n') == [{"error": {"message": "boom"}}]
    assert chunks(reader, b"event: error\ndata: not json\n\n") == [{"error": "not json"}]
    assert chunks(reader, b"data: [DONE]") == []
    assert chunks(reader, None) == [DONE]


def test_a_malformed_chunk_costs_nothing_before_it_and_two_never_pass_as_valid_ones() -> None:
    reader = ChunkReader(BOUNDS)
    events = reader.feed(b'data: {"ok":1}\n\ndata: {"a":1},{"b":\n\ndata: 2}\n\n')
    assert reader.parse(events[0]) == {"ok": 1}  # read before the malformed one is looked at
    with pytest.raises(UpstreamError, match="malformed stream chunk"):
        reader.parse(events[1])
    with pytest.raises(UpstreamError, match="malformed stream chunk"):
        reader.parse(events[2])


def test_bounds_still_hold_per_chunk() -> None:
    reader = ChunkReader(BOUNDS)
    with pytest.raises(UpstreamTooLarge, match="nested deeper"):
        chunks(reader, b"data: " + b"[" * 40 + b"]" * 40 + b"\n\n")
    with pytest.raises(UpstreamError, match="not a JSON object"):
        chunks(ChunkReader(BOUNDS), b"data: [1]\n\n")


def test_a_lone_surrogate_in_a_chunk_becomes_a_replacement_character() -> None:
    got = chunks(ChunkReader(BOUNDS), b'data: {"t":"a\\udcffb","pair":"\\ud83d\\ude00","plain":"\\u00e9"}\n\n')
    assert got == [{"t": "a\ufffdb", "pair": "\U0001F600", "plain": "\u00e9"}]
