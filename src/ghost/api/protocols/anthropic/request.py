"""An Anthropic Messages body as the agent's `ChatRequest`, messages OpenAI-shaped.

Validation is strict and every field Ghost cannot apply is refused with a 400 that names it
(server tools, documents, extended-thinking budgets, unknown fields): a client is never left
believing a setting took effect when it did not. `cache_control` is the one hint accepted and
not applied: it asks Anthropic's servers to cache a prefix and changes nothing in the answer.

The conversion: `system` becomes a system message; text and base64/URL images become OpenAI
content parts (images as `image_url` data URLs); an assistant's `tool_use` blocks become its
`tool_calls`; a user's `tool_result` blocks become `tool` messages (before the rest of that user
message, as OpenAI orders them); `thinking` blocks of earlier replies are not sent back upstream,
as on every other route. Pure functions: no I/O.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ghost.agent.request import ChatRequest
from ghost.api.bodies import describe
from ghost.api.session_id import optional_session_id
from ghost.errors import BadRequest
from ghost.llm.think import strip_think


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class CacheControl(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str


class TextBlock(Strict):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None
    citations: list[dict[str, Any]] | None = None


class Base64Source(Strict):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str


class UrlSource(Strict):
    type: Literal["url"]
    url: str


class ImageBlock(Strict):
    type: Literal["image"]
    source: Annotated[Base64Source | UrlSource, Field(discriminator="type")]
    cache_control: CacheControl | None = None


class ToolUseBlock(Strict):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]
    cache_control: CacheControl | None = None


class ToolResultBlock(Strict):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]] = ""
    is_error: bool = False
    cache_control: CacheControl | None = None


class ThinkingBlock(Strict):
    type: Literal["thinking"]
    thinking: str
    signature: str = ""


class RedactedThinkingBlock(Strict):
    type: Literal["redacted_thinking"]
    data: str


Block = Annotated[TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock,
                  Field(discriminator="type")]


class Message(Strict):
    role: Literal["user", "assistant", "system"]
    content: str | list[Block]


class Tool(Strict):
    """A client tool: if the model calls it, the turn ends with `stop_reason: "tool_use"`."""

    type: Literal["custom"] | None = None
    name: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, Any]
    strict: bool | None = None
    eager_input_streaming: bool | None = None  # a streaming hint: Ghost sends a call's input whole
    cache_control: CacheControl | None = None


class ToolChoice(Strict):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Metadata(Strict):
    user_id: str | None = None


class Thinking(Strict):
    """Off, or adaptive (the model thinks when it will): what Ghost does anyway. A budget it cannot apply."""

    type: Literal["disabled", "adaptive"]
    display: Literal["summarized"] | None = None


class MessagesRequest(Strict):
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    system: str | list[TextBlock] | None = None
    stream: bool = False
    temperature: float | int | None = Field(None, ge=0, le=2)
    top_p: float | int | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)
    stop_sequences: list[str] | None = None
    metadata: Metadata | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    cache_control: CacheControl | None = None


class CountTokensRequest(Strict):
    """The body of /v1/messages/count_tokens: a Messages request without the reply's settings."""

    model: str
    messages: list[Message] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    cache_control: CacheControl | None = None


Body = TypeVar("Body", MessagesRequest, CountTokensRequest)


def parse(model: type[Body], payload: dict[str, Any]) -> Body:
    """`payload` validated; a 400 naming the first field that is wrong or that Ghost cannot apply."""
    _refuse_server_tools(payload.get("tools"))
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise BadRequest(_describe(_first_error(exc.errors()))) from None


_UNION_TAG = re.compile(r"^(str|int|float|bool|list\[.*|dict\[.*|tagged-union\[.*|function-.*|[A-Z]\w*)$")
BLOCK_TYPES = frozenset({"text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking",
                         "base64", "url"})


def _first_error(errors: list[Any]) -> Any:
    """Of a union's failed branches, the error that went deepest: the one about what was meant."""
    return max(errors, key=lambda error: len(_location(error["loc"])))


def _location(loc: tuple[Any, ...]) -> list[Any]:
    """The path in the body, without the union branches pydantic names along the way."""
    out: list[Any] = []
    for index, part in enumerate(loc):
        if isinstance(part, str) and _UNION_TAG.match(part):
            continue
        if (isinstance(part, str) and part in BLOCK_TYPES and index + 1 < len(loc) and out
                and isinstance(out[-1], int) or (part in ("base64", "url") and out and out[-1] == "source")):
            continue  # a discriminated union's tag value
        out.append(part)
    return out


def _describe(error: Any) -> str:
    loc = _location(error["loc"])
    error = {**error, "loc": tuple(loc)}
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    if error["type"] == "extra_forbidden":
        return f"{where}: is not supported by this server"
    if error["loc"] and error["loc"][-1] == "thinking" or where.startswith("thinking"):
        return (f"{where}: only 'disabled' or 'adaptive' (shown) thinking can be applied by this server: "
                "a thinking budget cannot be (Ghost shows the model's reasoning and its own tool activity as "
                "thinking blocks as they come)")
    if error["type"] == "union_tag_invalid":
        return f"{where}: block type {error.get('ctx', {}).get('tag', '')!s} is not supported by this server"
    return describe(error)


def _refuse_server_tools(tools: Any) -> None:
    """Anthropic-hosted tools (web search, code execution, computer use) cannot run here: say so."""
    for index, tool in enumerate(tools if isinstance(tools, list) else []):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind not in (None, "custom"):
            raise BadRequest(f"tools[{index}].type: server tool {json.dumps(kind)} is not supported by this "
                             "server; only client tools (name, description, input_schema)")


# --- into the agent's request -----------------------------------------------------------------------


def chat_request(body: MessagesRequest, *, session_header: str | None = None) -> ChatRequest:
    return ChatRequest(
        messages=openai_messages(body.system, body.messages),
        model=body.model,
        stream=body.stream,
        session_id=optional_session_id(session_header),
        client_tools=client_tools(body.tools),
        sampling=sampling(body),
        tool_choice=tool_choice(body.tool_choice),
    )


def count_request(body: CountTokensRequest) -> ChatRequest:
    return ChatRequest(messages=openai_messages(body.system, body.messages), model=body.model, stream=False,
                       client_tools=client_tools(body.tools), tool_choice=tool_choice(body.tool_choice))


def sampling(body: MessagesRequest) -> dict[str, Any]:
    params: dict[str, Any] = {"max_tokens": body.max_tokens}
    for name in ("temperature", "top_p", "top_k"):  # top_k: llama.cpp, vLLM and the bundled model take it
        if (value := getattr(body, name)) is not None:
            params[name] = value
    if body.stop_sequences:
        params["stop"] = body.stop_sequences
    if body.metadata and body.metadata.user_id:
        params["user"] = body.metadata.user_id
    if body.tool_choice and body.tool_choice.disable_parallel_tool_use and body.tools:
        params["parallel_tool_calls"] = False
    return params


def client_tools(tools: list[Tool] | None) -> list[dict[str, Any]]:
    out = []
    for tool in tools or []:
        function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
        if tool.description is not None:
            function["description"] = tool.description
        if tool.strict is not None:
            function["strict"] = tool.strict
        out.append({"type": "function", "function": function})
    return out


def tool_choice(choice: ToolChoice | None) -> Any:
    if choice is None:
        return None
    if choice.type == "tool":
        if not choice.name:
            raise BadRequest("tool_choice.name: is required when tool_choice.type is 'tool'")
        return {"type": "function", "function": {"name": choice.name}}
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type]


def openai_messages(system: str | list[TextBlock] | None, messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if system:
        out.append({"role": "system", "content": _system_text(system)})
    for message in messages:
        if message.role == "assistant":
            out.append(_assistant(message.content))
        elif message.role == "system":
            out.append({"role": "system", "content": _system_text(message.content)})
        else:
            out += _user(message.content)
    return out


def _system_text(content: str | list[Any]) -> str:
    if isinstance(content, str):
        return content
    if not all(isinstance(block, TextBlock) for block in content):
        raise BadRequest("messages: a system message holds text blocks only")
    return "\n\n".join(block.text for block in content)


def _assistant(content: str | list[Any]) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": strip_think(content)}
    text, calls = [], []
    for block in content:
        if isinstance(block, TextBlock):
            text.append(block.text)
        elif isinstance(block, ToolUseBlock):
            calls.append({"id": block.id, "type": "function",
                          "function": {"name": block.name, "arguments": json.dumps(block.input, ensure_ascii=False)}})
        elif isinstance(block, (ImageBlock, ToolResultBlock)):
            raise BadRequest(f"messages: an assistant message cannot hold a {block.type} block")
        # thinking blocks: the reasoning of an earlier reply is never sent back upstream
    message: dict[str, Any] = {"role": "assistant", "content": strip_think("".join(text))}
    if calls:
        message["tool_calls"] = calls
        message["content"] = message["content"] or None
    return message


def _user(content: str | list[Any]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in content:
        if isinstance(block, ToolResultBlock):
            text, images = _result_content(block)
            results.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": text})
            parts += images  # a tool message is text only: its images follow in the user message
        elif isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            parts.append(image_part(block))
        elif isinstance(block, ToolUseBlock):
            raise BadRequest("messages: a user message cannot hold a tool_use block")
    if not parts:
        return results
    if all(part["type"] == "text" for part in parts):  # plain text: the form every upstream takes
        return [*results, {"role": "user", "content": "\n\n".join(part["text"] for part in parts)}]
    return [*results, {"role": "user", "content": parts}]


def _result_content(block: ToolResultBlock) -> tuple[str, list[dict[str, Any]]]:
    if isinstance(block.content, str):
        text, images = block.content, []
    else:
        text = "\n".join(part.text for part in block.content if isinstance(part, TextBlock))
        images = [image_part(part) for part in block.content if isinstance(part, ImageBlock)]
    return (f"Error: {text}" if block.is_error else text), images


def image_part(block: ImageBlock) -> dict[str, Any]:
    source = block.source
    url = source.url if isinstance(source, UrlSource) else f"data:{source.media_type};base64,{source.data}"
    return {"type": "image_url", "image_url": {"url": url}}
