"""Request bodies: pydantic models that parse them and document them (OpenAPI).

One description of what the chat routes (`/v1/chat/completions`, `/chat`, `/api/chat`,
`/api/generate`) and Ollama's embedding and model routes accept: the routes validate every body
with these models (`parsed`), and `ghost.api.openapi` publishes the same models as the request
schemas, so the parser and the document cannot disagree.

Validation is strict (no "yes" for true, no "0.5" for a number) and reports the first problem in
Ghost's error shape, naming the field: `messages: must be a non-empty list`. Unknown fields are
ignored on agent models (clients send plenty) and relayed on `-plain` ones; which parameters an
agent model applies or refuses is `chat_params`; the parts Ghost passes to the upstream as given (content parts,
the client's tool definitions) keep theirs, and say so in the schema. Turning a valid body into
the agent's request is `openai_request` (and `ollama_request` for Ollama's shapes).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidatorFunctionWrapHandler, WithJsonSchema,
                      WrapValidator)
from pydantic_core import PydanticCustomError

from ghost.api.session_id import SESSION_ID_PATTERN, SESSION_ID_RULE, SessionId
from ghost.errors import Unprocessable

IMAGE_PATTERN = r"^(data:[\s\S]*|[A-Za-z0-9+/=\r\n\t ]*)$"  # base64 (line breaks allowed), or a data: URL
M = TypeVar("M", bound=BaseModel)


def _says(message: str) -> WrapValidator:
    """Report any failure of the wrapped (union) type as one plain `message`."""
    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("ghost", message) from None

    return WrapValidator(check)


# An int stays an int on its way upstream; JSON Schema's `number` covers both.
Number = Annotated[int | float, _says("must be a number"), WithJsonSchema({"type": "number"})]
Stop = Annotated[str | list[str], _says("must be a string or a list of strings")]
Image = Annotated[str, Field(pattern=IMAGE_PATTERN)]


class Body(BaseModel):
    model_config = ConfigDict(strict=True)


class PassedOn(Body):
    """Sent to the upstream as the client gave it, fields Ghost does not know included."""

    model_config = ConfigDict(extra="allow")


# --- messages -------------------------------------------------------------------------------------


class FunctionCallIn(Body):
    name: str
    arguments: Annotated[str | dict[str, Any] | None, _says("must be JSON text or an object")] = Field(
        default_factory=dict, description="JSON text or an object.")


class ToolCallIn(Body):
    id: str | None = None
    type: str | None = None
    function: FunctionCallIn


class ImageUrl(PassedOn):
    url: str = Field(description="An http(s) or data: URL.")


class ContentPart(PassedOn):
    """An OpenAI content part, passed to the upstream as it is."""

    type: str = Field(description="`text` or `image_url`.")
    text: str | None = None
    image_url: ImageUrl | None = None


class ChatMessage(Body):
    """One message, OpenAI- or Ollama-shaped."""

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Annotated[str | list[ContentPart] | None, _says("must be a string or a list of parts")] = Field(
        None, description="Text, or a list of content parts.")
    name: str | None = None
    images: list[Image] | None = Field(None, description="Ollama: base64 images (or data: URLs).")
    tool_calls: list[ToolCallIn] | None = Field(None, description="Assistant messages: the calls it made.")
    tool_call_id: str | None = Field(None, description="Tool messages: the call this answers.")
    tool_name: str | None = Field(None, description="Ollama tool messages: the tool this answers.")


# --- tools and sampling ---------------------------------------------------------------------------


class FunctionSpec(PassedOn):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="JSON Schema of the arguments.")


class ToolSpec(Body):
    """A tool of the client's: if the model calls it, the turn ends and the call is returned."""

    type: str | None = Field(None, description="`function`.")
    function: FunctionSpec


class StreamOptions(Body):
    include_usage: bool | None = Field(None, description="Send a last chunk with the turn's usage.")


class OllamaOptions(Body):
    """Ollama sampling options; mapped to the OpenAI fields when those are not given. `num_ctx` is
    the turn's context window (at most the upstream's); options that load a model (`num_gpu`, ...)
    are refused on agent models (`ghost.api.chat_params`)."""

    temperature: Number | None = None
    top_p: Number | None = None
    num_predict: int | None = Field(None, description="Most tokens to generate (negative: no limit).")
    stop: Stop | None = None
    seed: int | None = None
    presence_penalty: Number | None = None
    frequency_penalty: Number | None = None
    top_k: int | None = None
    min_p: Number | None = None
    typical_p: Number | None = None
    repeat_penalty: Number | None = Field(None, description="Sent as llama.cpp's `repeat_penalty` and vLLM's "
                                          "`repetition_penalty`.")
    repeat_last_n: int | None = None
    mirostat: int | None = None
    mirostat_tau: Number | None = None
    mirostat_eta: Number | None = None
    tfs_z: Number | None = None
    num_keep: int | None = Field(None, description="Sent as llama.cpp's `n_keep`.")
    num_ctx: int | None = Field(None, ge=1, description="The context window of this turn, in tokens: Ghost "
                                "fits the conversation into it, or into the upstream's window when that is smaller.")


class Sampling(Body):
    model: str | None = Field(None, description="A served model name; empty or absent: the default one.")
    options: OllamaOptions | None = None
    temperature: Number | None = None
    top_p: Number | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    seed: int | None = None
    stop: Stop | None = None
    presence_penalty: Number | None = None
    frequency_penalty: Number | None = None
    response_format: dict[str, Any] | None = None
    logit_bias: dict[str, Number] | None = None
    user: str | None = None
    n: int | None = Field(None, description="Answers to make: 1 on agent models (more is a 400); relayed on "
                          "`-plain` models.")
    logprobs: bool | None = Field(None, description="Agent models: `true` is a 400; relayed on `-plain` models.")
    top_logprobs: int | None = Field(None, description="Agent models: a 400; relayed on `-plain` models.")
    parallel_tool_calls: bool | None = None
    reasoning_effort: str | None = None
    format: Annotated[str | dict[str, Any] | None, _says('must be "json" or a JSON schema')] = Field(
        None, description='Ollama: `"json"`, or a JSON schema the answer must match (sent upstream as '
        '`response_format`).')


# --- the bodies -----------------------------------------------------------------------------------


class ChatRequest(Sampling):
    """A chat turn. OpenAI's Chat Completions request; Ollama's fields are accepted too."""

    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = Field(None, description="Stream the reply. Default: false on the OpenAI "
                                "paths, true on /api/chat.")
    stream_options: StreamOptions | None = None
    session_id: Annotated[SessionId | Literal[""] | None, _says(SESSION_ID_RULE)] = Field(
        None, description="Conversation id for the stored history (else the X-Ghost-Session header; "
        "without either, Ghost finds the conversation this continues or starts a new one).")
    tools: list[ToolSpec] | None = None
    tool_choice: Annotated[str | dict[str, Any] | None, _says("must be a string or an object")] = Field(
        None, description="`auto`, `none`, `required`, or a named function.")


class GenerateRequest(Sampling):
    """Ollama's single-prompt completion: no tools, no agent, no system prompt of Ghost's."""

    prompt: str = ""
    system: str | None = None
    images: list[Image] | None = Field(None, description="Base64 images (or data: URLs).")
    stream: bool | None = Field(None, description="Stream NDJSON lines (default: true).")


# --- Ollama's other routes -------------------------------------------------------------------------


class EmbedRequest(Body):
    model: str | None = Field(None, description="A served model (its upstream name is used), or any "
                              "embedding model the upstream serves; default: the served model.")
    input: Annotated[str | Annotated[list[str], Field(min_length=1)],
                     _says("must be a string or a non-empty list of strings")] = Field(
        description="One text or a non-empty list of texts.")


class EmbeddingsRequest(Body):
    model: str | None = None
    prompt: str


class ModelNameRequest(Body):
    model: str | None = Field(None, description="The model (`name` is the older field).")
    name: str | None = None
    stream: bool | None = Field(None, description="Pull: stream status lines (default true).")


# --- validation errors in Ghost's words -----------------------------------------------------------

_BY_TYPE = {
    "missing": "is required", "bool_type": "must be true or false", "int_type": "must be an integer",
    "float_type": "must be a number", "string_type": "must be a string", "list_type": "must be a list",
    "too_short": "must be a non-empty list", "dict_type": "must be an object", "model_type": "must be an object",
}
_BY_PATTERN = {SESSION_ID_PATTERN: SESSION_ID_RULE, IMAGE_PATTERN: "must be base64 (or a data: URL)"}


def parsed(model: type[M], payload: dict[str, Any]) -> M:
    """`payload` validated as `model`; 422 naming the first field that is wrong."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise Unprocessable(describe(exc.errors()[0])) from None


def describe(error: Any) -> str:
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]).lstrip(".")
    kind, context = error["type"], error.get("ctx") or {}
    if kind == "string_pattern_mismatch" and context.get("pattern") in _BY_PATTERN:
        text = _BY_PATTERN[context["pattern"]]
    elif kind == "literal_error":
        text = f"must be one of {context.get('expected', '')}"
    else:
        text = _BY_TYPE.get(kind, error["msg"])
    return f"{where or 'request body'}: {text}"
