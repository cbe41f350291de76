"""The script: what the fake answers to each chat request, and which queued reply a request takes."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reply:
    """One scripted answer to a chat-completion request."""

    content: str = "Hello from the fake upstream."
    chunks: list[str] | None = None  # explicit content pieces; default: content split into words
    reasoning: str | None = None  # streamed as delta.reasoning_content before the content
    tool_calls: list[dict[str, Any]] | None = None  # [{"name": ..., "arguments": {...} | "json"}]
    delay: float = 0.0  # seconds between streamed chunks
    first_delay: float = 0.0  # seconds before the response starts
    status: int = 200
    body: str | None = None  # raw body instead of a completion (with status and content_type)
    content_type: str = "application/json"
    usage: dict[str, int] | None = field(
        default_factory=lambda: {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    )
    fail_after: int | None = None  # break the connection after this many streamed chunks
    finish_reason: str | None = None
    raw_stream: str | None = None  # sent verbatim as the event-stream body instead of the chunks
    raw_then_break: bool = False  # after raw_stream, break the connection instead of ending cleanly
    # A misbehaving upstream, generated as it is sent (never held whole): {"kind": "content" |
    # "arguments" | "calls" | "line" | "data_lines", "size": n}: n bytes of answer text, n bytes of
    # one tool call's arguments, n tool calls, one n-byte line that never ends, or one event whose
    # `data:` lines (short ones) add up to n bytes and never end.
    flood: dict[str, Any] | None = None
    hold: str | None = None  # wait for release(hold) after `hold_after` streamed chunks (see below)
    hold_after: int = 0  # chunks sent before the hold; a non-streamed reply is held before it is sent
    when: str | None = None  # only for a request whose last user message is this text

    def pieces(self) -> list[str]:
        return self.chunks if self.chunks is not None else words(self.content)


def words(text: str) -> list[str]:
    """Split text into streamable pieces that join back to exactly the text."""
    parts = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(parts)] if text else []


def last_user_text(body: dict[str, Any]) -> str:
    users = [m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"]
    return str(users[-1].get("content")) if users else ""


def next_reply(body: dict[str, Any], replies: deque[Reply], replies_for: dict[str, deque[Reply]],
               default: Reply) -> Reply:
    """The first scripted reply meant for this request (a client's parallel background requests
    cannot take a reply scripted for what the user said), else `default`. Takes it off its queue."""
    said = last_user_text(body).strip()
    for text, queued in replies_for.items():
        if queued and text in said:
            reply = queued.popleft()
            if not queued:  # gone once used up: a bench scripting each turn's own text stays O(1)
                del replies_for[text]
            return reply
    for reply in replies:
        if reply.when is None or reply.when == said:
            replies.remove(reply)
            return reply
    return default
