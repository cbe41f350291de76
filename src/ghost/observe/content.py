"""Prompt, reply and tool content as span attributes, in the shape of the OpenTelemetry GenAI
semantic conventions — only when `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`
(`Tracing.captures_content`); by default no span carries any content.

Messages become JSON arrays of `{role, parts}` (`gen_ai.input.messages`, `gen_ai.output.messages`,
`gen_ai.system_instructions`); tool calls carry `gen_ai.tool.call.arguments` and
`gen_ai.tool.call.result`. Every value is at most `GHOST_TRACE_CONTENT_MAX_CHARS` characters, so a
long conversation or a large file read cannot make a span (or the collector's storage) unbounded.
A message list over the bound stays valid JSON: its oldest messages are left out first, then the
texts of the rest are cut (ending with `CUT_MARK`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

CUT_MARK = "…[cut]"


def bounded(text: str, max_chars: int) -> str:
    """`text`, or its first characters and a mark when it is longer than `max_chars`."""
    if len(text) <= max_chars:
        return text
    return text[:max_chars - len(CUT_MARK)] + CUT_MARK


def _text(content: Any) -> str:
    """A message's content as text: a string as it is, a list of parts by its text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if message.get("role") == "tool":
        return [{"type": "tool_call_response", "id": message.get("tool_call_id", ""),
                 "response": _text(message.get("content"))}]
    if text := _text(message.get("content")):
        parts.append({"type": "text", "content": text})
    for call in message.get("tool_calls") or ():
        if not isinstance(call, dict):
            continue
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        parts.append({"type": "tool_call", "id": call.get("id", ""), "name": function.get("name", ""),
                      "arguments": function.get("arguments", "")})
    return parts


def request_attributes(messages: Iterable[Any], max_chars: int) -> dict[str, str]:
    """`gen_ai.system_instructions` and `gen_ai.input.messages` of an OpenAI-style message list."""
    system: list[dict[str, Any]] = []
    chat: list[dict[str, Any]] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        if message.get("role") == "system":
            system.append({"type": "text", "content": _text(message.get("content"))})
        else:
            chat.append({"role": str(message.get("role", "")), "parts": _parts(message)})
    attributes = {"gen_ai.input.messages": fitted(chat, max_chars)}
    if system:
        attributes["gen_ai.system_instructions"] = fitted(system, max_chars)
    return attributes


def reply_attribute(text: str, tool_calls: Iterable[Any], finish_reason: str, max_chars: int) -> str:
    """`gen_ai.output.messages` of one reply: its text and the tools it called (`ToolCall`s)."""
    parts: list[dict[str, Any]] = [{"type": "text", "content": text}] if text else []
    parts += [{"type": "tool_call", "id": call.id, "name": call.name, "arguments": call.arguments}
              for call in tool_calls]
    return fitted([{"role": "assistant", "parts": parts, "finish_reason": finish_reason}], max_chars)


def fitted(items: list[dict[str, Any]], max_chars: int) -> str:
    """`items` as JSON of at most `max_chars` characters: the newest items kept whole if they fit,
    else every string in them cut shorter until the whole fits."""
    sizes = [len(_json(item)) + 2 for item in items]
    total, start = sum(sizes), 0
    while start < len(items) - 1 and total > max_chars:
        total -= sizes[start]
        start += 1
    kept = items[start:]
    budget = max_chars
    while budget >= len(CUT_MARK) * 2:
        text = _json(_cut_strings(kept, budget))
        if len(text) <= max_chars:
            return text
        budget //= 2
    return "[]"


def _cut_strings(value: Any, budget: int) -> Any:
    if isinstance(value, str):
        return bounded(value, budget)
    if isinstance(value, dict):
        return {key: _cut_strings(item, budget) for key, item in value.items()}
    if isinstance(value, list):
        return [_cut_strings(item, budget) for item in value]
    return value


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)
