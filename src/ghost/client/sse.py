"""Ghost's OpenAI chat stream, read as the three things a terminal shows.

The stream is Server-Sent Events (read by `ghost.sse`): `data: {chat.completion.chunk}` blocks,
comment lines (`: ...`, keep-alives and tool markers) to ignore, an in-band `event: error` if the
turn fails after the first byte, and `data: [DONE]` at the end. In a chunk, `delta.content` is the answer and
`delta.reasoning_content` is what Ghost did on the way (tool activity, the model's reasoning).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ghost.client.connection import ClientError
from ghost.errors import error_text
from ghost.sse import iter_sse

DONE = "[DONE]"


@dataclass(frozen=True)
class Answer:
    text: str


@dataclass(frozen=True)
class Activity:
    text: str


@dataclass(frozen=True)
class Finished:
    reason: str


ChatEvent = Answer | Activity | Finished


def chat_events(chunks: Iterable[bytes]) -> Iterator[ChatEvent]:
    """What Ghost's stream says, from its body's bytes as they arrive."""
    for event in iter_sse(chunks):
        data = event.text
        if data == DONE:
            return
        payload = _json(data)
        if event.event == "error" or "error" in payload:
            raise ClientError(f"the answer failed: {error_text(payload.get('error'))}")
        yield from chunk_events(payload)


def chunk_events(chunk: dict[str, Any]) -> Iterator[ChatEvent]:
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        if delta.get("reasoning_content"):
            yield Activity(delta["reasoning_content"])
        if delta.get("content"):
            yield Answer(delta["content"])
        if choice.get("finish_reason"):
            yield Finished(choice["finish_reason"])


def _json(data: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise ClientError(f"Ghost sent a stream event that is not JSON: {data[:80]!r}") from exc
    if not isinstance(value, dict):
        raise ClientError(f"Ghost sent an unexpected stream event: {data[:80]!r}")
    return value
