"""Documentation-only models of Ghost's wire formats, for `/openapi.json`.

Nothing validates a request against these: routes parse their bodies themselves (so errors keep
Ghost's own shape and messages) and build their replies as plain dicts. The models say what those
parsers accept and what those replies hold; the schema fuzz test (tests/test_fuzz.py) checks every
response Ghost sends against them, so they cannot drift from the code unnoticed.

Request objects take unknown fields (Ghost ignores what it does not know, and clients send plenty);
JSON Schema allows them where `additionalProperties` is not given, so the models leave it out.
Constraints are the ones Ghost enforces, no more: a request the schema calls valid must not be
refused for its shape.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

SESSION_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
SessionId = Annotated[str, Field(pattern=SESSION_ID_PATTERN,
                                 description="Conversation id: 1-128 letters, digits and `. _ : -`.")]
# Base64 (line breaks allowed), or a data: URL, as ghost.agent.request checks.
Image = Annotated[str, Field(pattern=r"^(data:[\s\S]*|[A-Za-z0-9+/=\r\n\t ]*)$")]


# --- errors -------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    message: str = Field(description="What went wrong, for a human.")
    type: str = Field(description="A stable machine-readable kind, e.g. `invalid_request_error`.")


class ErrorResponse(BaseModel):
    """The one error shape of every error status."""

    error: ErrorDetail


class OllamaError(BaseModel):
    """The error shape of the Ollama routes (`/api/chat`, `/api/tags`, ...): Ollama's own."""

    error: str = Field(description="What went wrong, for a human.")


class StreamError(BaseModel):
    """The last line of an NDJSON stream that failed after it started (Ollama's in-band error)."""

    error: str


# --- chat requests ------------------------------------------------------------------------------


class FunctionCallIn(BaseModel):
    name: str
    arguments: str | dict[str, Any] | None = Field(None, description="JSON text or an object.")


class ToolCallIn(BaseModel):
    id: str | None = None
    type: str | None = None
    function: FunctionCallIn


class ImageUrl(BaseModel):
    url: str = Field(description="An http(s) or data: URL.")


class ContentPart(BaseModel):
    """An OpenAI content part, passed to the upstream as it is."""

    type: str = Field(description="`text` or `image_url`.")
    text: str | None = None
    image_url: ImageUrl | None = None


class ChatMessage(BaseModel):
    """One message, OpenAI- or Ollama-shaped."""

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = Field(None, description="Text, or a list of content parts.")
    name: str | None = None
    images: list[Image] | None = Field(None, description="Ollama: base64 images (or data: URLs).")
    tool_calls: list[ToolCallIn] | None = Field(None, description="Assistant messages: the calls it made.")
    tool_call_id: str | None = Field(None, description="Tool messages: the call this answers.")
    tool_name: str | None = Field(None, description="Ollama tool messages: the tool this answers.")


class FunctionSpec(BaseModel):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="JSON Schema of the arguments.")


class ToolSpec(BaseModel):
    """A tool of the client's: if the model calls it, the turn ends and the call is returned."""

    type: str | None = Field(None, description="`function`.")
    function: FunctionSpec


class StreamOptions(BaseModel):
    include_usage: bool | None = Field(None, description="Send a last chunk with the turn's usage.")


class OllamaOptions(BaseModel):
    """Ollama sampling options; mapped to the OpenAI fields when those are not given."""

    temperature: float | None = None
    top_p: float | None = None
    num_predict: int | None = Field(None, description="Most tokens to generate (negative: no limit).")
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


class _Sampling(BaseModel):
    model: str | None = Field(None, description="A served model name; empty or absent: the default one.")
    options: OllamaOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    response_format: dict[str, Any] | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None


class ChatRequest(_Sampling):
    """A chat turn. OpenAI's Chat Completions request; Ollama's fields are accepted too."""

    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = Field(None, description="Stream the reply. Default: false on the OpenAI "
                                "paths, true on /api/chat.")
    stream_options: StreamOptions | None = None
    session_id: SessionId | None = Field(None, description="Conversation id for the stored history "
                                         "(else the X-Ghost-Session header, else `default`).")
    tools: list[ToolSpec] | None = None
    tool_choice: str | dict[str, Any] | None = Field(None, description="`auto`, `none`, `required`, or "
                                                     "a named function.")


class GenerateRequest(_Sampling):
    """Ollama's single-prompt completion: no tools, no agent, no system prompt of Ghost's."""

    prompt: str = ""
    system: str | None = None
    images: list[Image] | None = Field(None, description="Base64 images (or data: URLs).")
    stream: bool | None = Field(None, description="Stream NDJSON lines (default: true).")


class ShowRequest(BaseModel):
    model: str | None = Field(None, description="Model name (`name:latest` matches `name`).")
    name: str | None = Field(None, description="Older clients' spelling of `model`.")


class SaveRequest(BaseModel):
    chat_history: list[dict[str, Any]] | None = Field(
        None, description="History to put in the archive instead of the stored one.")
    session_id: SessionId | None = Field(None, description="Whose stored history (else the "
                                         "X-Ghost-Session header, else `default`).")


# --- chat replies: OpenAI ---------------------------------------------------------------------------


class Usage(BaseModel):
    """The whole turn's cost, summed over every upstream call it made."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class FunctionCallOut(BaseModel):
    name: str
    arguments: str = Field(description="JSON text.")


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"]
    function: FunctionCallOut


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None
    reasoning_content: str | None = Field(None, description="Upstream reasoning and tool activity.")
    tool_calls: list[ToolCallOut] | None = Field(None, description="Calls of the client's own tools.")


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str


class ChatCompletion(BaseModel):
    id: str = Field(description="`chatcmpl-<request id>`.")
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = Field(None, description="Absent when the upstream did not report it.")


class ToolCallDelta(ToolCallOut):
    index: int


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    finish_reason: str | None


class ChatCompletionChunk(BaseModel):
    """One `data:` line of the SSE stream."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = Field(None, description="Only in the last chunk, with "
                                "`stream_options.include_usage`.")


# --- chat replies: Ollama ---------------------------------------------------------------------------


class OllamaFunctionCall(BaseModel):
    name: str
    arguments: dict[str, Any]


class OllamaToolCall(BaseModel):
    function: OllamaFunctionCall


class OllamaMessage(BaseModel):
    role: Literal["assistant"]
    content: str
    thinking: str | None = Field(None, description="Upstream reasoning and tool activity.")
    tool_calls: list[OllamaToolCall] | None = None


class _OllamaLine(BaseModel):
    model: str
    created_at: str
    done: bool
    done_reason: str | None = Field(None, description="Final line only.")
    total_duration: int | None = Field(None, description="Final line only: nanoseconds.")
    load_duration: int | None = Field(None, description="Final line only.")
    prompt_eval_count: int | None = Field(None, description="Final line only, when known.")
    eval_count: int | None = Field(None, description="Final line only, when known.")


class OllamaChatChunk(_OllamaLine):
    """One NDJSON line of an /api/chat stream."""

    message: OllamaMessage


class OllamaChatResponse(ChatCompletion):
    """/api/chat without streaming: Ollama's fields and OpenAI's in one object."""

    created_at: str
    message: OllamaMessage
    done: bool
    done_reason: str
    total_duration: int
    load_duration: int
    prompt_eval_count: int | None = None
    eval_count: int | None = None


class GenerateChunk(_OllamaLine):
    """One NDJSON line of an /api/generate stream."""

    response: str
    thinking: str | None = None


class GenerateResponse(GenerateChunk):
    done_reason: str
    total_duration: int
    load_duration: int


# --- info -------------------------------------------------------------------------------------------


class VersionInfo(BaseModel):
    version: str = Field(description="The Ollama version Ghost is compatible with.")


class ModelDetails(BaseModel):
    parent_model: str
    format: str
    family: str
    families: list[str]
    parameter_size: str
    quantization_level: str


class TagModel(BaseModel):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: ModelDetails


class TagList(BaseModel):
    models: list[TagModel]


class ModelInfo(BaseModel):
    license: str
    modelfile: str
    parameters: str
    template: str
    details: ModelDetails
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: str


class RunningModel(BaseModel):
    name: str
    model: str
    size: int
    digest: str
    details: ModelDetails
    expires_at: str
    size_vram: int


class RunningList(BaseModel):
    models: list[RunningModel]


class EmbedRequest(BaseModel):
    model: str | None = Field(None, description="A served model (its upstream name is used), or any "
                              "embedding model the upstream serves; default: the served model.")
    input: str | list[str] = Field(description="One text or a non-empty list of texts.")


class EmbedResponse(BaseModel):
    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int
    prompt_eval_count: int | None = None


class EmbeddingsRequest(BaseModel):
    model: str | None = None
    prompt: str


class EmbeddingResponse(BaseModel):
    embedding: list[float]


class ModelNameRequest(BaseModel):
    model: str | None = Field(None, description="The model (`name` is the older field).")
    name: str | None = None
    stream: bool | None = Field(None, description="Pull: stream status lines (default true).")


class PullStatus(BaseModel):
    status: str


class OpenAIModel(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[OpenAIModel]


class UpstreamProbe(BaseModel):
    url: str
    reachable: bool
    status: int | None = None
    latency_ms: float | None = None
    error: str | None = None


class McpServerHealth(BaseModel):
    name: str
    transport: Literal["stdio", "http"]
    state: Literal["starting", "ready", "down", "stopped"]
    tools: int
    tool_names: list[str]
    restarts: int
    error: str = Field(description="Why it is down, or why it went down last.")


class McpHealth(BaseModel):
    config: str = Field(description="The MCP config file in use.")
    config_error: str
    skipped: dict[str, str] = Field(description="Entries not used, and why.")
    servers: list[McpServerHealth]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    model: str
    models: list[str]
    upstream: UpstreamProbe
    embedded_model: dict[str, Any] | None
    sandbox: dict[str, Any]
    skills: dict[str, Any] | None = Field(
        None, description="Acquired skills: `loaded` (count) and `skipped` ([{name, reason}]): "
        "sidecars the last scan refused (not a regular file, too large, too deep, wrong shape).")
    storage: str
    uptime_s: float
    in_flight_turns: int
    workspace_load_waiting: bool = Field(
        description="True while a workspace load waits for running turns to end.")
    event_loop_lag: dict[str, float]
    context_window: dict[str, Any] | None = None  # tokens, where the number came from, how tokens are counted
    mcp: McpHealth | None = Field(None, description="The configured MCP servers (null until started).")


# --- sessions and workspace -----------------------------------------------------------------------------


class SessionSummary(BaseModel):
    id: str
    messages: int = Field(description="How many messages are stored.")
    updated_at: float = Field(description="Unix time.")


class SessionList(BaseModel):
    sessions: list[SessionSummary]


class ContextSummary(BaseModel):
    """What the model sees in place of the session's earliest messages (see docs/agent.md)."""

    messages: int  # how many earliest messages it stands for
    text: str
    updated_at: float


class Session(BaseModel):
    id: str
    messages: list[dict[str, Any]]
    updated_at: float
    summary: ContextSummary | None = None


class SessionDeleted(BaseModel):
    status: Literal["deleted"]
    id: str


class WorkspaceLoaded(BaseModel):
    status: Literal["success"]
    chat_history: list[Any]
    files: int = Field(description="Files restored into the sandbox.")


class Uploaded(BaseModel):
    status: Literal["success"]
    filename: str = Field(description="Where it landed, relative to the sandbox.")
    size: int
