"""Ollama's request shapes, adapted to OpenAI's (which is what the upstream speaks).

Every chat route accepts both shapes (`ghost.api.bodies`); `openai_request` calls these for the
Ollama parts it meets: base64 `images` on a message, tool calls with object arguments and no id,
tool results that name their tool instead of a call id, sampling `options`, and the single prompt
of `/api/generate`. Pure functions: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from typing import Any

from ghost.api.bodies import ChatMessage, GenerateRequest, OllamaOptions, ToolCallIn
from ghost.api.chat_params import ollama_sampling
from ghost.events import ToolCall

def options_as_sampling(options: OllamaOptions | None) -> dict[str, Any]:
    """The upstream sampling fields that Ollama's `options` set (the mapping is `chat_params`')."""
    return ollama_sampling(options.model_dump(exclude_none=True)) if options is not None else {}


def generate_messages(body: GenerateRequest) -> list[ChatMessage]:
    """/api/generate's prompt (with its system text and images) as chat messages."""
    user = ChatMessage.model_construct(role="user", content=body.prompt, images=body.images)
    system = [ChatMessage.model_construct(role="system", content=body.system)] if body.system else []
    return [*system, user]


# --- messages ---------------------------------------------------------------------------------------


def images_as_parts(content: str | list[Any], images: list[str]) -> list[Any]:
    """A message's text and its base64 images as OpenAI content parts (images as data: URLs)."""
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
    return parts + [{"type": "image_url", "image_url": {"url": _data_url(image)}} for image in images]


def _data_url(image: str) -> str:
    if image.startswith("data:"):
        return image
    head = _decoded_head(image)
    mime = "image/png" if head.startswith(b"\x89PNG") else "image/gif" if head.startswith(b"GIF8") \
        else "image/webp" if head[8:12] == b"WEBP" else "image/jpeg"
    return f"data:{mime};base64,{image}"


def _decoded_head(image: str) -> bytes:
    """The first bytes of a base64 image, enough to tell its type; b"" if they do not decode alone."""
    head = image[:16]
    try:
        return base64.b64decode(head + "=" * (-len(head) % 4), validate=False)
    except binascii.Error:  # e.g. whitespace inside the first characters shifted the 4-character groups
        return b""


def openai_tool_call(call: ToolCallIn) -> dict[str, Any]:
    """A call an assistant message made, OpenAI-shaped: arguments as JSON text, an id (Ollama's have none)."""
    arguments = call.function.arguments
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return ToolCall(id=call.id or fresh_call_id(), name=call.function.name, arguments=arguments).openai_object()


def matching_call_id(tool_name: str | None, earlier: list[dict[str, Any]]) -> str:
    """Ollama tool results carry no call id: pair them with the latest unanswered call of that tool."""
    answered = {m.get("tool_call_id") for m in earlier if m["role"] == "tool"}
    for previous in reversed(earlier):
        for call in reversed(previous.get("tool_calls") or []):
            if call["id"] not in answered and (tool_name is None or call["function"]["name"] == tool_name):
                return call["id"]
    return fresh_call_id()


def fresh_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:12]}"
