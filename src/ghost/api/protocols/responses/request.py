"""A Responses API request body as the agent's `ChatRequest`, and what the response echoes back.

Strict: a field Ghost does not apply is a 400 that names it (`unsupported field(s): background`),
never dropped without a word. Input items become OpenAI chat messages: `message` items (text,
`input_image` parts), `function_call` items (an assistant's tool calls) and `function_call_output`
items (tool results); `reasoning` items the client sends back are left out, as every route leaves
the model's reasoning out of what goes upstream. Pure functions: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ghost.agent.request import ChatRequest
from ghost.api.bodies import Number, describe
from ghost.errors import BadRequest


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


# --- content parts and input items ----------------------------------------------------------------

class InputText(Strict):
    type: Literal["input_text"]
    text: str


class InputImage(Strict):
    type: Literal["input_image"]
    image_url: str = Field(description="An http(s) or data: URL (file ids are not served).")
    detail: Literal["low", "high", "auto"] | None = None


class OutputText(Strict):
    type: Literal["output_text"]
    text: str
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None


class Refusal(Strict):
    type: Literal["refusal"]
    refusal: str


Part = Annotated[InputText | InputImage | OutputText | Refusal, Field(discriminator="type")]


class MessageItem(Strict):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[Part]
    id: str | None = None
    status: str | None = None


class FunctionCallItem(Strict):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(Strict):
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[Part]
    id: str | None = None
    status: str | None = None


class ReasoningItem(Strict):
    type: Literal["reasoning"]
    id: str | None = None
    summary: list[dict[str, Any]] = []
    content: list[dict[str, Any]] | None = None
    encrypted_content: str | None = None
    status: str | None = None


ITEMS: dict[str, type[Strict]] = {"message": MessageItem, "function_call": FunctionCallItem,
                                  "function_call_output": FunctionCallOutputItem, "reasoning": ReasoningItem}


# --- tools, formats, the body ---------------------------------------------------------------------

class FunctionTool(Strict):
    type: Literal["function"]
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedFunction(Strict):
    type: Literal["function"]
    name: str


class TextFormat(Strict):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextOptions(Strict):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningOptions(Strict):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None  # Ghost always summarises its activity


class StreamOptions(Strict):
    include_obfuscation: bool | None = None  # no obfuscation padding is ever sent


class ResponsesBody(Strict):
    model: str | None = None
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    temperature: Number | None = None
    top_p: Number | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    text: TextOptions | None = None
    reasoning: ReasoningOptions | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    truncation: Literal["auto", "disabled"] | None = None  # Ghost fits the context itself either way
    include: list[str] | None = None
    # A cache hint (Codex sends one): Ghost keeps no prompt cache, so there is nothing to key.
    prompt_cache_key: str | None = None


# Stateless clients (Codex, `store: false`) ask for reasoning they can send back: Ghost never sends
# reasoning upstream, so its reasoning items need no encrypted content and have none.
INCLUDABLE = frozenset({"reasoning.encrypted_content"})


@dataclass
class ResponsesRequest:
    """A parsed request: the agent's part, and what the response object echoes."""

    chat: ChatRequest
    input_messages: list[dict[str, Any]]  # this request's input, OpenAI-shaped (no instructions)
    instructions: str | None
    previous_response_id: str | None
    store: bool
    echo: dict[str, Any] = field(default_factory=dict)


def parsed_body(payload: dict[str, Any]) -> ResponsesBody:
    unknown = sorted(set(payload) - set(ResponsesBody.model_fields))
    if unknown:
        raise BadRequest(f"unsupported field(s): {', '.join(unknown)}")
    body = _validated(ResponsesBody, payload, ())
    if unserved := [value for value in body.include or [] if value not in INCLUDABLE]:
        raise BadRequest(f"include: unsupported value(s): {', '.join(unserved)}")
    return body


def responses_request(body: ResponsesBody) -> ResponsesRequest:
    """The request before any stored conversation is put in front (see `continued`)."""
    tools = [_function_tool(tool, index) for index, tool in enumerate(body.tools or [])]
    messages = input_messages(body.input)
    store = body.store is not False
    text = body.text.model_dump(by_alias=True, exclude_none=True) if body.text else {"format": {"type": "text"}}
    echo = {"instructions": body.instructions, "max_output_tokens": body.max_output_tokens,
            "parallel_tool_calls": body.parallel_tool_calls is not False, "temperature": body.temperature,
            "top_p": body.top_p, "tool_choice": body.tool_choice or "auto", "tools": [t.model_dump(exclude_none=True)
                                                                                     for t in tools],
            "text": text, "metadata": body.metadata or {}, "store": store, "user": body.user,
            "previous_response_id": body.previous_response_id, "truncation": body.truncation or "disabled",
            "reasoning": body.reasoning.model_dump() if body.reasoning else {"effort": None, "summary": None}}
    chat = ChatRequest(messages=messages, model=body.model or "", stream=bool(body.stream),
                       client_tools=[_chat_tool(t) for t in tools], sampling=_sampling(body),
                       include_usage=True, tool_choice=_tool_choice(body.tool_choice), store=store)
    return ResponsesRequest(chat, messages, body.instructions, body.previous_response_id, store, echo)


def with_history(request: ResponsesRequest, earlier: list[dict[str, Any]], session_id: str | None) -> None:
    """Put the system instructions and a stored conversation in front of this request's input.

    Instructions are not carried from a previous response (as OpenAI's API defines it): each
    request's own are put first."""
    system = [{"role": "system", "content": request.instructions}] if request.instructions else []
    request.chat.messages = [*system, *earlier, *request.input_messages]
    request.chat.session_id = session_id
    check_calls_answered(request.chat.messages)


def check_calls_answered(messages: list[dict[str, Any]]) -> None:
    """Each function call answered by its output right after it, and each output answering a call:
    the upstream would refuse the conversation otherwise, in words about messages the client never sent."""
    waiting: list[str] = []
    for message in messages:
        if message["role"] == "tool":
            if message["tool_call_id"] not in waiting:
                raise BadRequest(f"input: the function_call_output for call_id '{message['tool_call_id']}' "
                                 "answers no function_call before it")
            waiting.remove(message["tool_call_id"])
            continue
        if waiting:
            raise BadRequest(f"input: no function_call_output for call_id '{waiting[0]}'; send it "
                             "right after the call (or in the request that continues the response)")
        waiting = [call["id"] for call in message.get("tool_calls") or []]


def _validated(model: type[Strict], value: Any, where: tuple[str | int, ...]) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        error = {**error, "loc": (*where, *error["loc"])}
        if error["type"] == "extra_forbidden":
            raise BadRequest(f"{_where(error['loc'])}: unsupported field") from None
        raise BadRequest(describe(error)) from None


def _where(loc: tuple[Any, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")


# --- input -> messages ----------------------------------------------------------------------------

def input_messages(given: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(given, str):
        return [{"role": "user", "content": given}]
    if not given:
        raise BadRequest("input: must be a string or a non-empty list of items")
    messages: list[dict[str, Any]] = []
    for index, raw in enumerate(given):
        kind = raw.get("type", "message") if isinstance(raw, dict) else None
        model = ITEMS.get(kind) if isinstance(kind, str) else None
        if model is None:
            raise BadRequest(f"input[{index}]: unsupported item type {kind!r}; Ghost takes "
                             + ", ".join(ITEMS))
        _add_item(messages, _validated(model, raw, ("input", index)))
    return messages


def _add_item(messages: list[dict[str, Any]], item: Strict) -> None:
    if isinstance(item, MessageItem):
        messages.append({"role": item.role, "content": _content(item.content)})
    elif isinstance(item, FunctionCallItem):
        call = {"id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": item.arguments}}
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant":  # one assistant turn: its text and its calls
            last.setdefault("tool_calls", []).append(call)
            last["content"] = last["content"] or None
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif isinstance(item, FunctionCallOutputItem):
        messages.append({"role": "tool", "tool_call_id": item.call_id, "content": _content(item.output)})
    # reasoning items: never sent upstream


def _content(content: str | list[Any]) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if all(isinstance(part, (InputText, OutputText)) for part in content):
        return "".join(part.text for part in content)
    parts: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, InputImage):
            image = {"url": part.image_url, **({"detail": part.detail} if part.detail else {})}
            parts.append({"type": "image_url", "image_url": image})
        elif isinstance(part, Refusal):
            parts.append({"type": "text", "text": part.refusal})
        else:
            parts.append({"type": "text", "text": part.text})
    return parts


# --- tools and sampling ---------------------------------------------------------------------------

def _function_tool(raw: dict[str, Any], index: int) -> FunctionTool:
    if isinstance(raw, dict) and raw.get("type") != "function":
        raise BadRequest(f"tools[{index}].type: only function tools are served, not {raw.get('type')!r}")
    return _validated(FunctionTool, raw, ("tools", index))


def _chat_tool(tool: FunctionTool) -> dict[str, Any]:
    return {"type": "function", "function": tool.model_dump(exclude={"type"}, exclude_none=True)}


def _tool_choice(choice: str | dict[str, Any] | None) -> Any:
    if choice is None or isinstance(choice, str):
        if choice not in (None, "auto", "none", "required"):
            raise BadRequest("tool_choice: must be auto, none, required or a function")
        return choice
    named = _validated(NamedFunction, choice, ("tool_choice",))
    return {"type": "function", "function": {"name": named.name}}


def _sampling(body: ResponsesBody) -> dict[str, Any]:
    params: dict[str, Any] = {"temperature": body.temperature, "top_p": body.top_p,
                              "max_tokens": body.max_output_tokens, "user": body.user,
                              "parallel_tool_calls": body.parallel_tool_calls}
    if body.reasoning and body.reasoning.effort:
        params["reasoning_effort"] = body.reasoning.effort
    if body.text:
        params["verbosity"] = body.text.verbosity
        params["response_format"] = response_format(body.text.format)
    return {key: value for key, value in params.items() if value is not None}


def response_format(fmt: TextFormat | None) -> dict[str, Any] | None:
    """`text.format` as Chat Completions' `response_format`; None for plain text."""
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "json_object"}
    if not fmt.name or fmt.schema_ is None:
        raise BadRequest("text.format: a json_schema format needs a name and a schema")
    schema = {"name": fmt.name, "schema": fmt.schema_}
    if fmt.description is not None:
        schema["description"] = fmt.description
    if fmt.strict is not None:
        schema["strict"] = fmt.strict
    return {"type": "json_schema", "json_schema": schema}
