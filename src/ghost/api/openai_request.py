"""A validated chat body (`ghost.api.bodies`) as the agent's `ChatRequest`, messages OpenAI-shaped.

Both wire formats end here: OpenAI's fields are taken as they are, Ollama's are adapted on the
way by `ollama_request`. Assistant messages lose their reasoning (`<think>` blocks in the text,
`thinking` / `reasoning_content` fields), so it is never sent back to the upstream. Pure
functions: no I/O.
"""

from __future__ import annotations

from typing import Any

from ghost.agent.request import ChatRequest
from pydantic import ValidationError

from ghost.api import bodies, chat_params
from ghost.api.known_messages import known_messages
from ghost.api.ollama_request import (generate_messages, images_as_parts, matching_call_id, openai_tool_call,
                                      options_as_sampling)
from ghost.api.session_id import optional_session_id
from ghost.errors import BadRequest
from ghost.llm.think import strip_think

def parsed_chat(payload: dict[str, Any], workspace: str) -> tuple[bodies.ChatRequest, list[dict[str, Any]]]:
    """The chat body validated, but for its leading messages validated on an earlier turn
    (`known_messages`): (the body with the rest of its messages, those known ones converted)."""
    raw = payload.get("messages")
    # The last message is always validated: the body's model wants one message at least.
    known = known_messages.leading(workspace, raw[:-1]) if isinstance(raw, list) else []
    if known:
        try:
            return bodies.ChatRequest.model_validate({**payload, "messages": raw[len(known):]}), known  # type: ignore[index]
        except ValidationError:
            pass  # validated whole below, so the error names the field at its own position
    return bodies.parsed(bodies.ChatRequest, payload), []


def chat_request(body: bodies.ChatRequest, payload: dict[str, Any], *, default_stream: bool,
                 session_header: str | None = None, known: list[dict[str, Any]] | None = None,
                 workspace: str | None = None) -> ChatRequest:
    """`payload`: the body as received, for the fields no model of `bodies` declares (see `chat_params`);
    `known`: the converted messages that come before `body.messages` (`parsed_chat`); `workspace`:
    whose memo of validated messages learns this request's (None: none does)."""
    options = body.stream_options
    known = known or []
    messages = openai_messages(body.messages, known)
    if workspace is not None and isinstance(payload.get("messages"), list):
        known_messages.learn(workspace, payload["messages"], messages, len(known))
    return ChatRequest(
        messages=messages,
        model=body.model or "",
        stream=default_stream if body.stream is None else body.stream,
        session_id=optional_session_id(body.session_id or session_header),
        client_tools=client_tools(body.tools),
        sampling=sampling(body, payload),
        include_usage=bool(options and options.include_usage),
        tool_choice=body.tool_choice,
        relay=relay(body, payload),
        refused=chat_params.agent_refusal(payload),
        context_window=_context_window(body),
    )


def generate_request(body: bodies.GenerateRequest, payload: dict[str, Any]) -> ChatRequest:
    """/api/generate: one prompt, no tools, streamed unless asked otherwise; a relay like `-plain` models."""
    if (refusal := chat_params.generate_refusal(payload) or chat_params.ollama_relay_refusal(payload)) is not None:
        raise BadRequest(refusal)
    return ChatRequest(messages=openai_messages(generate_messages(body)), model=body.model or "",
                       stream=True if body.stream is None else body.stream, sampling=sampling(body, payload),
                       relay=relay(body, payload), context_window=_context_window(body))


def sampling(body: bodies.Sampling, payload: dict[str, Any]) -> dict[str, Any]:
    """The fields an agent turn sends upstream: OpenAI's as given, else those Ollama's `format` and
    `options` set."""
    given = {name: payload[name] for name in chat_params.APPLIED if payload.get(name) is not None}
    return _with_max_tokens({**_ollama_fields(body), **given})


def relay(body: bodies.Sampling, payload: dict[str, Any]) -> dict[str, Any]:
    """The fields a `-plain` model sends upstream: every one the client sent, Ollama's translated."""
    return _with_max_tokens({**_ollama_fields(body), **chat_params.relayed(payload)})


def _context_window(body: bodies.Sampling) -> int | None:
    return chat_params.context_window(body.options.model_dump(exclude_none=True) if body.options else None)


def _ollama_fields(body: bodies.Sampling) -> dict[str, Any]:
    fields = options_as_sampling(body.options)
    if (response_format := chat_params.response_format(body.format)) is not None:
        fields["response_format"] = response_format
    return fields


def _with_max_tokens(params: dict[str, Any]) -> dict[str, Any]:
    if isinstance(params.get("max_tokens"), int) and params["max_tokens"] < 0:  # Ollama's num_predict -1 = no limit
        del params["max_tokens"]
    return params


def client_tools(tools: list[bodies.ToolSpec] | None) -> list[dict[str, Any]]:
    return [{"type": "function", "function": tool.function.model_dump(exclude_unset=True)} for tool in tools or []]


# --- messages ---------------------------------------------------------------------------------------


def openai_messages(messages: list[bodies.ChatMessage], earlier: list[dict[str, Any]] | None = None
                    ) -> list[dict[str, Any]]:
    """`messages` OpenAI-shaped, after `earlier` (already converted): the whole list."""
    out: list[dict[str, Any]] = list(earlier or [])
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
