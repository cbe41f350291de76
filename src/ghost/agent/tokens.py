"""Count the tokens of chat messages cheaply, and keep the count honest.

A message's count is cached by the hash of its content, so a client that resends the whole
history each turn costs one hash per message, and only new text is ever counted. New text is
counted with the upstream's tokenizer when it has an endpoint (one batched request per round:
every uncounted text joined), else estimated at `CHARS_PER_TOKEN`.

Neither is exact about what the model sees (chat templates add tokens, tool schemas are rendered
differently), so every count passes through a calibration factor: the largest recent ratio of the
prompt tokens the upstream reported to what we counted for that same prompt.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
from collections import deque
from typing import Any

import httpx

log = logging.getLogger("ghost.context")
CHARS_PER_TOKEN = 4.0
MESSAGE_OVERHEAD = 6  # role markers and separators of a chat template
IMAGE_TOKENS = 768  # a guess per image part; no text to count
CACHE_ENTRIES = 50_000
RATIO_WINDOW = 16
RATIO_BOUNDS = (0.5, 4.0)  # outside: not a miscount but something else (a silent cut, a fake count)
TOKENIZE_TIMEOUT_S = 5.0


def message_key(message: dict[str, Any]) -> bytes:
    """A hash of the message's content (the same message resent in a later request has the same key)."""
    content = message.get("content")
    if len(message) == 2 and isinstance(content, str) and isinstance(message.get("role"), str):
        # Most messages: role and text. Their own form, which no other message can produce.
        encoded = f"\x1d{message['role']}\x1f{content}".encode("utf-8", "surrogatepass")
        return hashlib.blake2b(encoded, digest_size=16).digest()
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(message):
        value = message[name]
        digest.update(f"\x1e{name}\x1f".encode())
        if isinstance(value, str):  # the common case (content, role, tool_call_id) needs no JSON
            digest.update(value.encode("utf-8", "surrogatepass"))
        else:
            digest.update(b"\x01" + json.dumps(value, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    return digest.digest()


def message_text(message: dict[str, Any]) -> tuple[str, int]:
    """The text of a message that becomes tokens, and the tokens of parts that are not text."""
    content = message.get("content")
    pieces: list[str] = [content] if isinstance(content, str) else []
    extra = 0
    for part in content if isinstance(content, list) else []:
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            pieces.append(part["text"])
        else:
            extra += IMAGE_TOKENS
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        pieces += [str(function.get("name", "")), str(function.get("arguments", ""))]
    return "\n".join(pieces), extra + MESSAGE_OVERHEAD


def estimate(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


class TokenCounter:
    """One per Ghost process: the count cache and the calibration are shared by every turn."""

    def __init__(self, http: httpx.AsyncClient | None = None, tokenize_url: str = "",
                 headers: dict[str, str] | None = None) -> None:
        self.http = http
        self.tokenize_url = tokenize_url
        self.headers = headers or {}
        self._counts: dict[bytes, int] = {}
        self._ratios: deque[float] = deque(maxlen=RATIO_WINDOW)
        self.factor = 1.0
        self.remote_calls = 0

    # --- counting ----------------------------------------------------------------------------
    def cached(self, key: bytes) -> int | None:
        return self._counts.get(key)

    async def count_new(self, items: list[tuple[bytes, dict[str, Any]]]) -> None:
        """Count the messages whose keys are not cached yet (one tokenizer request for all)."""
        texts = [(key, *message_text(message)) for key, message in items if key not in self._counts]
        if not texts:
            return
        counts = await self._count_texts([text for _, text, _ in texts])
        for (key, _, extra), count in zip(texts, counts):
            self._remember(key, count + extra)

    async def count_text(self, key: bytes, text: str) -> int:
        """A bare text (the tool schemas), cached like a message."""
        if (count := self.cached(key)) is not None:
            return count
        count = (await self._count_texts([text]))[0]
        self._remember(key, count)
        return count

    async def count_keyed(self, items: list[tuple[bytes, str]]) -> None:
        """Count bare texts under their own keys (tool schemas): one tokenizer request for all."""
        if not items:
            return
        counts = await self._count_texts([text for _, text in items])
        for (key, _), count in zip(items, counts):
            self._remember(key, count)

    def _remember(self, key: bytes, count: int) -> None:
        self._counts[key] = count
        if len(self._counts) > CACHE_ENTRIES:  # forget the older half (insertion order), in one go
            for old in list(itertools.islice(self._counts, CACHE_ENTRIES // 2)):
                del self._counts[old]

    async def _count_texts(self, texts: list[str]) -> list[int]:
        estimates = [estimate(text) for text in texts]
        if not self.tokenize_url or self.http is None or sum(estimates) == 0:
            return estimates
        total = await self._remote_total("\n".join(texts))
        if total is None:
            return estimates
        # One request for the whole batch, shared out by length: exact in sum, close per message.
        chars = sum(len(text) for text in texts) or 1
        return [math.ceil(total * len(text) / chars) for text in texts]

    async def _remote_total(self, text: str) -> int | None:
        bundled = self.tokenize_url.endswith("/count")
        body = {"input": text} if bundled else {"content": text}
        try:
            self.remote_calls += 1
            response = await self.http.post(self.tokenize_url, json=body, headers=self.headers,
                                            timeout=TOKENIZE_TIMEOUT_S)
            data = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            log.debug("tokenizer endpoint failed (%s); estimating", exc)
            return None
        value = data.get("count") if bundled and isinstance(data, dict) else \
            len(data["tokens"]) if isinstance(data, dict) and isinstance(data.get("tokens"), list) else None
        return value if isinstance(value, int) else None

    # --- calibration -------------------------------------------------------------------------
    def calibrated(self, raw: int) -> int:
        return math.ceil(raw * self.factor)

    def learn(self, raw: int, actual: int) -> None:
        """The upstream said the prompt we counted as `raw` tokens was `actual` tokens."""
        if raw <= 0 or actual <= 0:
            return
        ratio = actual / raw
        if not RATIO_BOUNDS[0] <= ratio <= RATIO_BOUNDS[1]:
            return
        self._ratios.append(ratio)
        self.factor = max(self._ratios)
