"""Fingerprints of a conversation, to tell which stored conversation a request continues.

A chat client re-sends the whole conversation on every turn. Ghost stores, per session, the digest
of the conversation it ended with; a request whose earlier messages hash to that digest continues
that session. The digests are chained (each covers the one before it), so the digests of every
prefix of a request cost one pass over its messages.

Messages are compared by what a client can faithfully send back: role, visible text and tool calls
(name and arguments). Not compared: call ids (Ollama clients have none, so Ghost makes them up),
whitespace, and reasoning a UI folds into the text (`<think>` blocks, Open WebUI's `<details>`).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

_FOLDED = re.compile(r"<think>.*?</think>|<details\b[^>]*>.*?</details>", re.DOTALL | re.IGNORECASE)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "text":
            parts.append(str(part.get("text") or ""))
        elif isinstance(part, dict) and part.get("type") == "image_url":
            url = str((part.get("image_url") or {}).get("url") or "")
            parts.append("image:" + hashlib.sha256(url.encode()).hexdigest())
    return "\n".join(parts)


def _arguments(raw: Any) -> Any:
    try:
        return json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return raw


def canonical(message: dict[str, Any]) -> str:
    """What of a message must match for two conversations to be the same."""
    if not isinstance(message, dict):  # a restored archive's history is the user's to shape
        return json.dumps(message, ensure_ascii=False, sort_keys=True, default=str)
    text = _text(message.get("content"))
    if message.get("role") == "assistant":
        text = _FOLDED.sub("", text)
    calls = [[c.get("function", {}).get("name"), _arguments(c.get("function", {}).get("arguments"))]
             for c in message.get("tool_calls") or [] if isinstance(c, dict)]
    return json.dumps([message.get("role"), " ".join(text.split()), calls], ensure_ascii=False, sort_keys=True)


def prefix_digests(messages: list[dict[str, Any]]) -> list[str]:
    """digests[k] is the digest of messages[:k + 1]."""
    digests, previous = [], ""
    for message in messages:
        previous = hashlib.sha256(f"{previous}\0{canonical(message)}".encode()).hexdigest()
        digests.append(previous)
    return digests


def conversation_digest(messages: list[dict[str, Any]]) -> str:
    return prefix_digests(messages)[-1] if messages else ""


def opening_digest(messages: list[dict[str, Any]]) -> str:
    """The digest of the conversation's first user message (its first message if it has none):
    what a regenerated or edited turn of the same chat still shares, and a one-shot task does not."""
    first = next((m for m in messages if isinstance(m, dict) and m.get("role") == "user"),
                 messages[0] if messages else {})
    return hashlib.sha256(canonical(first).encode()).hexdigest()
