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
import threading
from collections import OrderedDict
from typing import Any

from ghost.plainprefix import PlainPrefixes

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


# A client resends the whole conversation every turn, so all but its newest messages were chained
# on an earlier turn: each step (digest before, role, text) -> digest is remembered, and a turn
# computes `canonical` and a hash only for what is new. Bounded by the characters it holds.
MAX_STEP_CHARS = 8_000_000  # texts kept as keys, in all
MAX_STEP_TEXT = 200_000  # a longer text is hashed every time rather than held
MAX_STEPS = 200_000


class _ChainSteps:
    def __init__(self) -> None:
        self._steps: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()  # the history's writes chain on the database thread
        self._chats: PlainPrefixes[str] = PlainPrefixes()

    def chain(self, messages: list[Any], previous: str) -> list[str]:
        """The chain over `messages` from `previous`; one lock for the whole walk, since nearly every
        step is a lookup (a miss is one hash: the turn's new messages). A conversation's chain from
        its start is first found as a whole (`ghost.plainprefix`), then looked up step by step."""
        with self._lock:
            known = self._chats.known("", messages) if not previous else []
            digests = self._walk(messages[len(known):], known[-1] if known else previous)
            if not previous:
                self._chats.remember("", messages, [*known, *digests], len(known))
            return [*known, *digests]

    def _walk(self, messages: list[Any], previous: str) -> list[str]:
        digests = []
        for message in messages:
            key = _step_key(previous, message)
            digest = self._steps.get(key) if key is not None else None
            if digest is None:
                digest = hashlib.sha256(f"{previous}\0{canonical(message)}".encode()).hexdigest()
                if key is not None:
                    self._put(key, digest)
            else:
                self._steps.move_to_end(key)  # type: ignore[arg-type]
            digests.append(digest)
            previous = digest
        return digests

    def _put(self, key: tuple[str, str, str], digest: str) -> None:
        self._steps[key] = digest
        self._chars += len(key[2])
        while self._chars > MAX_STEP_CHARS or len(self._steps) > MAX_STEPS:
            (_, _, text), _ = self._steps.popitem(last=False)
            self._chars -= len(text)

    def clear(self) -> None:
        with self._lock:
            self._steps.clear()
            self._chars = 0
            self._chats.clear()


_steps = _ChainSteps()


def _step_key(previous: str, message: Any) -> tuple[str, str, str] | None:
    """The memo key of a plain text message (role and text are all `canonical` reads of it), else None."""
    if type(message) is not dict or message.get("tool_calls"):
        return None
    role, content = message.get("role"), message.get("content")
    if type(role) is not str or type(content) is not str or len(content) > MAX_STEP_TEXT:
        return None
    return previous, role, content


def prefix_digests(messages: list[dict[str, Any]], previous: str = "") -> list[str]:
    """digests[k] is the digest of messages[:k + 1]; `previous`: the digest of what comes before them."""
    return _steps.chain(messages, previous)


def conversation_digest(messages: list[dict[str, Any]]) -> str:
    return prefix_digests(messages)[-1] if messages else ""


def opening_digest(messages: list[dict[str, Any]]) -> str:
    """The digest of the conversation's first user message (its first message if it has none):
    what a regenerated or edited turn of the same chat still shares, and a one-shot task does not."""
    first = next((m for m in messages if isinstance(m, dict) and m.get("role") == "user"),
                 messages[0] if messages else {})
    return hashlib.sha256(canonical(first).encode()).hexdigest()
