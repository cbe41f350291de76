"""Fold a conversation's earliest messages into a summary written by the upstream model itself.

One extra call per summary: not streamed, no tools, `max_tokens` bounded, and its prompt squeezed
to fit the window too. If the call fails or comes back empty, a plain excerpt of the messages
stands in (and is not cached, so the next turn tries again).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from ghost.events import Usage
from ghost.agent.tokens import message_text
from ghost.errors import GhostError
from ghost.llm.chat import Completion
from ghost.llm.upstream import Upstream

log = logging.getLogger("ghost.context")
INSTRUCTIONS = (
    "You summarise the earlier part of a conversation between a user and an AI assistant, so the "
    "assistant can go on without those messages. Keep what matters later: the user's requests and "
    "preferences, facts, names, numbers, file paths, decisions, results of tool calls, and open tasks. "
    "Write plain, dense sentences; no preamble.")
INSTRUCTION_TOKENS = 120  # the instructions and the two messages' framing, generously
MIN_MESSAGE_CHARS = 80
FALLBACK_MESSAGE_CHARS = 200


@dataclass(frozen=True)
class Summary:
    text: str
    usage: Usage | None
    written_by_model: bool  # False: the call failed and an excerpt stands in


def summary_message(text: str, covers: int) -> dict[str, Any]:
    return {"role": "system", "content": (
        f"Summary of the {covers} earliest messages of this conversation, which are left out to fit "
        f"the context window:\n{text}")}


def render(previous: str | None, messages: list[dict[str, Any]], max_chars: int) -> str:
    """The messages as plain lines, each long one cut in the middle so that all fit `max_chars`."""
    lines = [_line(message) for message in messages]
    head = f"Summary so far:\n{_middle_cut(previous, max_chars // 2)}\n\nMessages since:\n" if previous else "Messages:\n"
    room = max(max_chars - len(head), MIN_MESSAGE_CHARS)
    if sum(len(line) + 1 for line in lines) > room:
        each = max(room // max(len(lines), 1) - 1, MIN_MESSAGE_CHARS)
        lines = [_middle_cut(line, each) for line in lines]
    return (head + "\n".join(lines))[:max_chars]


def _line(message: dict[str, Any]) -> str:
    text, _ = message_text(message)
    role = message.get("role", "?")
    if message.get("tool_calls"):
        calls = ", ".join(f"{c['function']['name']}({c['function'].get('arguments', '')})" for c in message["tool_calls"])
        spoken, _ = message_text({"content": message.get("content")})  # a string or a list of parts
        text = f"{spoken} [called {calls}]"
    return f"{role}: {' '.join(str(text).split())}"


def _middle_cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = (limit - 5) // 2
    return text[:half] + " […] " + text[len(text) - half:]


def excerpt(previous: str | None, messages: list[dict[str, Any]], max_chars: int) -> str:
    """What stands in when the model could not summarise: the older summary and a cut of each message."""
    lines = [_middle_cut(_line(m), FALLBACK_MESSAGE_CHARS) for m in messages]
    text = "(Not summarised; a cut of each message:)\n" + "\n".join(lines)
    return _middle_cut(f"{previous}\n{text}" if previous else text, max_chars)


async def summarise(upstream: Upstream, *, model: str, prompt: str, fallback: str, max_tokens: int,
                    extra: dict[str, Any], request_id: str) -> Summary:
    """The model's summary of `prompt` (made by `render`) in at most `max_tokens` tokens."""
    payload = {**extra, "model": model, "stream": False, "max_tokens": max_tokens, "temperature": 0,
               "messages": [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": prompt}]}
    text: list[str] = []
    usage: Usage | None = None
    try:
        # A request id of its own, in the same form (llama-cpp-python's server answers an empty 400
        # to an x-request-id that is not a UUID).
        async for item in upstream.stream_chat(payload, uuid.uuid4().hex):
            if isinstance(item, Completion):
                usage = item.usage
            elif item.kind == "content":
                text.append(item.text)
    except GhostError as exc:
        log.warning("turn %s: the summary call failed (%s); an excerpt of the messages stands in",
                    request_id, exc.message)
        return Summary(fallback, None, written_by_model=False)
    written = "".join(text).strip()
    if not written:
        log.warning("turn %s: the model wrote an empty summary; an excerpt of the messages stands in", request_id)
        return Summary(fallback, usage, written_by_model=False)
    return Summary(written, usage, written_by_model=True)
