"""Recognise an upstream's "the prompt does not fit my context window" error.

Each server words it its own way:
- llama.cpp's server: 400 `{"error": {"type": "exceed_context_size_error", "n_prompt_tokens": N, "n_ctx": M}}`
- vLLM (and llama-cpp-python, OpenAI): 400 with a message "This model's maximum context length is M
  tokens. However, you requested N tokens ..." (older vLLM: "... your request has N input tokens").
Ollama never says it: it cuts the prompt from the front (see ghost.llm.window).
"""

from __future__ import annotations

import re
from typing import Any

from ghost.errors import ContextLengthExceeded

_MAXIMUM = re.compile(r"maximum context length is (\d+)")
_REQUESTED = re.compile(r"(?:requested|request has|prompt contains at least|prompt is) (\d+)")
_LLAMA_CPP_TYPE = "exceed_context_size_error"


def context_overflow(status: int, body: Any) -> ContextLengthExceeded | None:
    """The overflow `body` (parsed JSON of a non-200 reply) describes, or None if it is another error."""
    if status not in (400, 413, 422) or not isinstance(body, dict):
        return None
    error = body.get("error") if isinstance(body.get("error"), dict) else body
    if error.get("type") == _LLAMA_CPP_TYPE:
        return _overflow(_int(error.get("n_prompt_tokens")), _int(error.get("n_ctx")))
    message = error.get("message")
    if not isinstance(message, str):
        return None
    maximum = _MAXIMUM.search(message)
    if maximum is None and error.get("code") != "context_length_exceeded":
        return None
    requested = _REQUESTED.search(message)
    return _overflow(int(requested.group(1)) if requested else 0, int(maximum.group(1)) if maximum else 0)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _overflow(needed: int, allowed: int) -> ContextLengthExceeded:
    return ContextLengthExceeded(overflow_message(needed, allowed), needed=needed, allowed=allowed)


def overflow_message(needed: int, allowed: int, what: str = "the prompt") -> str:
    counts = []
    if needed:
        counts.append(f"needs about {needed:,} tokens")
    if allowed:
        counts.append(f"the model's context window allows {allowed:,}")
    detail = f" ({'; '.join(counts)})" if counts else ""
    return (f"{what} does not fit the model's context window{detail}. Shorten the message, start a "
            f"new conversation, or use a model with a larger window (--context-window).")
