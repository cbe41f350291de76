"""A validated chat body (`ghost.api.bodies`) as the agent's `ChatRequest`, messages OpenAI-shaped.

Both wire formats end here: OpenAI's fields are taken as they are, Ollama's are adapted on the
way by `ollama_request`. Assistant messages lose their reasoning (`<think>` blocks in the text,
`thinking` / `reasoning_content` fields), so it is never sent back to the upstream. Pure
functions: no I/O.
"""

from __future__ import annotations

from typing import Any

from ghost.agent.request import ChatRequest
from ghost.api import bodies
from ghost.api.ollama_request import (generate_messages, images_as_parts, matching_call_id, openai_tool_call,
                                      options_as_sampling)
from ghost.api.session_id import optional_session_id
from ghost.llm.think import strip_think

# OpenAI sampling fields passed through to the upstream as given.
_PASSTHROUGH = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed",
                "presence_penalty", "frequency_penalty", "response_format", "logit_bias", "user")


def chat_request(body: bodies.ChatRequest, *, default_stream: bool, session_header: str | None = None) -> ChatRequest:
    options = body.stream_options
    return ChatRequest(
        messages=openai_messages(body.messages),
        model=body.model or "",
        stream=default_stream if body.stream is None else body.stream,
        session_id=optional_session_id(body.session_id or session_header),
        client_tools=client_tools(body.tools),
        sampling=sampling(body),
        include_usage=bool(options and options.include_usage),
        tool_choice=body.tool_choice,
    )


def generate_request(body: bodies.GenerateRequest) -> ChatRequest:
    """/api/generate: one prompt, no tools, streamed unless asked otherwise."""
    return ChatRequest(messages=openai_messages(generate_messages(body)), model=body.model or "",
                       stream=True if body.stream is None else body.stream, sampling=sampling(body))


def sampling(body: bodies.Sampling) -> dict[str, Any]:
    """The sampling fields for the upstream: OpenAI's as given, else Ollama's `options` mapped."""
    given = body.model_dump(include=set(_PASSTHROUGH), exclude_none=True)
    params = {**options_as_sampling(body.options), **given}
    if params.get("max_tokens", 0) < 0:  # Ollama's num_predict -1 = no limit
        del params["max_tokens"]
    return params


def client_tools(tools: list[bodies.ToolSpec] | None) -> list[dict[str, Any]]:
    return [{"type": "function", "function": tool.function.model_dump(exclude_unset=True)} for tool in tools or []]


# --- messages ---------------------------------------------------------------------------------------


def openai_messages(messages: list[bodies.ChatMessage]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for message in messages:
        out.append(openai_message(message, out))
    return out


def openai_message(message: bodies.ChatMessage, earlier: list[dict[str, Any]]) -> dict[str, Any]:
    """One message OpenAI-shaped; `earlier`: the messages before it, already converted."""
    result: dict[str, Any] = {"role": message.role, "content": _content(message)}
    if message.role == "assistant":
        if isinstance(result["content"], str):
            result["content"] = strip_think(result["content"])
        if message.tool_calls:
            result["tool_calls"] = [openai_tool_call(call) for call in message.tool_calls]
            result["content"] = result["content"] or None
    if message.role == "tool":
        result["tool_call_id"] = message.tool_call_id or matching_call_id(message.tool_name or message.name, earlier)
    if message.name is not None:
        result["name"] = message.name
    return result


def _content(message: bodies.ChatMessage) -> Any:
    content = message.content
    if content is None:
        content = ""
    elif isinstance(content, list):
        content = [part.model_dump(exclude_unset=True) for part in content]
    return images_as_parts(content, message.images) if message.images else content
