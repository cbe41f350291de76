"""Tool calling for a small local model: the prompt, the grammar, and the OpenAI-shaped replies.

Used by the bundled model server's chat handler (`ghost.llm.embedded_server`); pure functions,
no llama.cpp here, so it is testable on its own.

The protocol the model follows, inside ChatML: the system message lists the tools and says that
an assistant turn starts with either `message:` (then the answer) or `functions.NAME:` (then the
arguments as JSON on the next line). The first words of the turn are generated under a grammar
that allows exactly those openings, and the arguments under a grammar made from the tool's JSON
schema, so whatever the model picks is well-formed.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from ghost.events import ToolCall

END = "<|im_end|>"
MESSAGE = "message:"
CALL = "functions."
DESCRIPTION_CHARS = 100  # per tool description, in the prompt
INSTRUCTIONS = (
    "You can use these tools:\n{tools}\n\n"
    "Start every reply with either `message:` followed by your answer to the user, or "
    "`functions.NAME:` followed by the tool's arguments as JSON on the next line. "
    "Use a tool only when the user's request needs it."
)


# --- the prompt ----------------------------------------------------------------------------------

def text_of(content: Any) -> str:
    """Message content as text: a string, or the text parts of a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return str(content)


def tool_line(tool: dict[str, Any]) -> str:
    function = tool.get("function", {})
    schema = function.get("parameters") or {}
    required = set(schema.get("required") or [])
    params = ", ".join(
        f"{name}{'' if name in required else '?'}: {spec.get('type', 'any') if isinstance(spec, dict) else 'any'}"
        for name, spec in (schema.get("properties") or {}).items()
    )
    return f"- {function.get('name')}({params}): {first_sentence(str(function.get('description', '')))}"


def first_sentence(text: str) -> str:
    """The start of a description, for the prompt: every token counts in a small model's context,
    and the first prompt is read at about a hundred tokens a second on one core."""
    text = " ".join(text.split())
    sentence = text.split(". ", 1)[0].rstrip(".")
    if len(sentence) > DESCRIPTION_CHARS:
        sentence = sentence[:DESCRIPTION_CHARS].rsplit(" ", 1)[0] + "…"
    return sentence


def _turn(role: str, text: str) -> str:
    return f"<|im_start|>{role}\n{text}{END}\n"


def _assistant_text(message: dict[str, Any], with_tools: bool) -> str:
    calls = message.get("tool_calls") or []
    if calls:
        return "\n".join(f"{CALL}{c['function']['name']}:\n{c['function'].get('arguments') or '{}'}"
                         for c in calls)
    text = text_of(message.get("content"))
    return f"{MESSAGE}\n{text}" if with_tools else text


def render_prompt(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
    """ChatML for `messages`, the tools explained in the system message, ending on the assistant's turn."""
    system = [text_of(m.get("content")) for m in messages if m.get("role") in ("system", "developer")]
    if tools:
        system.append(INSTRUCTIONS.format(tools="\n".join(tool_line(t) for t in tools)))
    parts = [_turn("system", "\n\n".join(s for s in system if s))] if any(system) else []
    for message in messages:
        role = message.get("role")
        if role == "assistant":
            parts.append(_turn("assistant", _assistant_text(message, bool(tools))))
        elif role == "tool":
            parts.append(_turn("tool", text_of(message.get("content"))))
        elif role == "user":
            parts.append(_turn("user", text_of(message.get("content"))))
    return "".join(parts) + "<|im_start|>assistant\n"


# --- choosing -----------------------------------------------------------------------------------

def _literal(text: str) -> str:
    return json.dumps(text)  # a GBNF string literal escapes like JSON


def opening_grammar(tool_names: list[str], allow_message: bool) -> str:
    """GBNF for the first words of the reply: `message:` or `functions.NAME:` for a known NAME."""
    names = " | ".join(_literal(name) for name in tool_names)
    choices = [f'{_literal(CALL)} name ":"'] + ([_literal(MESSAGE)] if allow_message else [])
    return f"root ::= {' | '.join(choices)}\nname ::= {names}\n"


def chosen_tool(opening: str) -> str | None:
    """The tool name from a generated opening, or None for a message."""
    opening = opening.strip()
    if opening.startswith(CALL) and opening.endswith(":"):
        return opening[len(CALL):-1]
    return None


def forced_tool(tool_choice: Any) -> str | None:
    """The tool named by an OpenAI `tool_choice` object, if it names one."""
    if isinstance(tool_choice, dict):
        return (tool_choice.get("function") or {}).get("name")
    return None


def tool_by_name(tools: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((t for t in tools if (t.get("function") or {}).get("name") == name), None)


def _since_last_user(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    return messages[users[-1] + 1:] if users else messages


def tool_rounds_since_user(messages: list[dict[str, Any]]) -> int:
    """Assistant turns with tool calls since the user last spoke."""
    return sum(1 for m in _since_last_user(messages) if m.get("role") == "assistant" and m.get("tool_calls"))


def _same_arguments(a: str, b: str) -> bool:
    try:
        return json.loads(a or "{}") == json.loads(b or "{}")
    except ValueError:
        return a.strip() == b.strip()


def repeats_a_call(messages: list[dict[str, Any]], function: dict[str, Any]) -> bool:
    """True if this exact call (name and arguments) was already made since the user last spoke."""
    earlier = (c.get("function") or {} for m in _since_last_user(messages) if m.get("role") == "assistant"
               for c in m.get("tool_calls") or [])
    return any(e.get("name") == function["name"] and _same_arguments(e.get("arguments", ""), function["arguments"])
               for e in earlier)


# --- replies, OpenAI-shaped ------------------------------------------------------------------------

class Reply:
    """Builds the chat completion (or its chunks) for one request."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {**self._head("chat.completion.chunk"),
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}

    def completion(self, message: dict[str, Any], finish_reason: str, usage: dict[str, int]) -> dict[str, Any]:
        return {**self._head("chat.completion"),
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
                "usage": usage}

    def tool_call(self, name: str, arguments: str) -> dict[str, Any]:
        return ToolCall(f"call_{uuid.uuid4().hex[:24]}", name, arguments).openai_object()

    def stream_text(self, chunks: Iterable[dict[str, Any]], prompt_tokens: int,
                    earlier_tokens: int = 0) -> Iterator[dict[str, Any]]:
        """Text-completion chunks from llama.cpp -> chat chunks; the last one carries the usage
        (llama.cpp streams one chunk per generated token; `earlier_tokens`: the reply's opening)."""
        yield self.chunk({"role": "assistant", "content": ""})
        finish, started, generated = "stop", False, earlier_tokens
        for chunk in chunks:
            choice = chunk["choices"][0]
            text = choice.get("text") or ""
            generated += 1 if text or choice.get("finish_reason") is None else 0  # not the bare end
            if not started:  # the line break after `message:` is the protocol's, not the answer's
                text = text.lstrip("\r\n")
                started = bool(text)
            if text:
                yield self.chunk({"content": text})
            finish = choice.get("finish_reason") or finish
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": generated,
                 "total_tokens": prompt_tokens + generated}
        yield {**self.chunk({}, finish), "usage": usage}

    def stream_tool_call(self, call: dict[str, Any], usage: dict[str, int]) -> Iterator[dict[str, Any]]:
        yield self.chunk({"role": "assistant", "content": None})
        yield self.chunk({"tool_calls": [{"index": 0, **call}]})
        yield {**self.chunk({}, "tool_calls"), "usage": usage}


def usage_of(*completions: dict[str, Any]) -> dict[str, int]:
    """Prompt tokens of the last call (the longest prompt), completion tokens of all of them."""
    usages = [c.get("usage") or {} for c in completions]
    prompt = usages[-1].get("prompt_tokens", 0)
    generated = sum(u.get("completion_tokens", 0) for u in usages)
    return {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated}
