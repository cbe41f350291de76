"""The tool chooser's pure parts, in process: compact schemas, the choice under a budget, find_tools."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ghost.agent.tokens import TokenCounter
from ghost.agent.tool_offer import FIND_TOOLS, SchemaTokens, ToolChooser, compact_schema


def tool(tool_name: str, description: str, **properties: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": tool_name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": list(properties)[:1]}}}


LONG = "x " * 300
CATALOGUE = [tool(f"tool_{n}", f"Does thing {n}. {LONG}", text={"type": "string", "description": LONG})
             for n in range(20)] + [
    tool("weather_lookup", "Look up the weather forecast for a city.", city={"type": "string", "description": LONG}),
    tool("delete_skill", "Delete an acquired skill.", name={"type": "string"})]


def test_compact_keeps_names_types_required_and_enums_and_drops_the_prose() -> None:
    original = {"type": "function", "function": {"name": "f", "description": "First sentence. Second one.",
                "parameters": {"type": "object", "title": "T", "properties": {
                    "mode": {"type": "string", "enum": ["a", "b"], "description": "which", "default": "a"},
                    "description": {"type": "object", "examples": [{}], "properties": {
                        "n": {"type": "integer", "description": "a number"}}}},
                    "required": ["mode"]}}}
    compact = compact_schema(original)
    assert compact["function"]["description"] == "First sentence"
    assert compact["function"]["parameters"] == {"type": "object", "properties": {
        "mode": {"type": "string", "enum": ["a", "b"]},
        "description": {"type": "object", "properties": {"n": {"type": "integer"}}}},  # a parameter's name stays
        "required": ["mode"]}
    assert original["function"]["parameters"]["properties"]["mode"]["description"] == "which"  # not changed


def choose(budget: int, text: str, chooser: ToolChooser | None = None) -> tuple[ToolChooser, Any]:
    chooser = chooser or ToolChooser(SchemaTokens(TokenCounter(), bundled=False))
    offer = asyncio.run(chooser.choose(CATALOGUE, [{"role": "user", "content": text}], budget))
    return chooser, offer


def test_all_fit_then_compacted_then_chosen_by_relevance_with_find_tools() -> None:
    _, everything = choose(1_000_000, "hi")
    assert everything.tools == CATALOGUE and not everything.compacted and not everything.left_out
    _, compacted = choose(everything.tokens - 1, "hi")
    assert compacted.compacted and not compacted.left_out and compacted.tokens < compacted.full_tokens // 4
    _, chosen = choose(200, "what is the weather forecast in Paris?")
    names = [t["function"]["name"] for t in chosen.tools]
    assert names[-1] == FIND_TOOLS and "weather_lookup" in names and "delete_skill" in names
    assert chosen.tokens <= 200 and len(chosen.left_out) == len(CATALOGUE) + 1 - len(names)


def test_find_tools_unlocks_its_matches_for_the_next_call() -> None:
    chooser, first = choose(200, "hello")
    offered = {t["function"]["name"] for t in first.tools}
    assert "tool_17" not in offered
    content, _ = chooser.find({"query": "tool_17"})
    assert [t["name"] for t in json.loads(content)["tools"]][0] == "tool_17"
    _, second = choose(200, "hello", chooser)
    assert "tool_17" in {t["function"]["name"] for t in second.tools}
    missing, _ = chooser.find({})
    assert "needs a query" in missing


def test_counts_are_cached_by_content_not_recounted_each_round() -> None:
    counter = TokenCounter()
    tokens = SchemaTokens(counter, bundled=False)
    calls = []
    original = counter._count_texts

    async def counting(texts: list[str]) -> list[int]:
        calls.append(len(texts))
        return await original(texts)

    counter._count_texts = counting  # type: ignore[method-assign]
    asyncio.run(tokens.counts(CATALOGUE))
    asyncio.run(tokens.counts(json.loads(json.dumps(CATALOGUE))))  # the same content, new objects
    asyncio.run(tokens.counts(CATALOGUE))
    assert calls == [len(CATALOGUE)]


def test_a_find_tools_result_stays_bounded_whatever_the_schemas() -> None:
    huge = [tool(f"huge_{n}", "A huge tool.", **{f"p{i}_{'y' * 40}": {"type": "string"} for i in range(400)})
            for n in range(8)]
    chooser = ToolChooser(SchemaTokens(TokenCounter(), bundled=False))
    asyncio.run(chooser.choose(huge, [{"role": "user", "content": "hello"}], 100))
    content, _ = chooser.find({"query": "huge tool " * 5000})
    listed = json.loads(content)["tools"]
    assert len(listed) == 8 and len(content) < 18_000
    assert any(isinstance(item["parameters"], str) for item in listed)  # the bound was reached


def test_a_client_list_sent_again_is_matched_whole_and_a_changed_one_is_not() -> None:
    tokens = SchemaTokens(TokenCounter(), bundled=False)
    first = json.loads(json.dumps(CATALOGUE))
    assert tokens.intern(first) is first
    assert tokens.intern(json.loads(json.dumps(CATALOGUE))) is first  # the same content: last turn's objects
    changed = json.loads(json.dumps(CATALOGUE))
    changed[3]["function"]["parameters"]["properties"]["text"]["type"] = "integer"
    assert tokens.intern(changed) is changed
