"""Models of Ghost's replies and of the bodies of its non-chat routes, for `/openapi.json`.

The chat routes' request models live in `ghost.api.bodies`, where they are the parser too. The
models here are documentation: routes build their replies as plain dicts, and the few non-chat
bodies are read by their routes. The schema fuzz test (tests/test_fuzz.py) checks every response
Ghost sends against them, so they cannot drift from the code unnoticed.

Request objects take unknown fields (Ghost ignores what it does not know, and clients send plenty);
JSON Schema allows them where `additionalProperties` is not given, so the models leave it out.
Constraints are the ones Ghost enforces, no more: a request the schema calls valid must not be
refused for its shape.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from ghost.api.session_id import SessionId


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


# --- other requests -------------------------------------------------------------------------


class ShowRequest(BaseModel):
    model: str | None = Field(None, description="Model name (`name:latest` matches `name`).")
    name: str | None = Field(None, description="Older clients' spelling of `model`.")


class SaveRequest(BaseModel):
    chat_history: list[dict[str, Any]] | None = Field(
        None, description="History to put in the archive instead of the stored one.")
    session_id: SessionId | None = Field(None, description="Whose stored history (else the "
                                         "X-Ghost-Session header, else the conversation stored last).")


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


LOGPROBS = ("The upstream's token log-probabilities (`{\"content\": [...]}`): only a `-plain` model's reply, "
            "relayed as the upstream sent it, when the request asked for `logprobs`.")


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str
    logprobs: dict[str, Any] | None = Field(None, description=LOGPROBS)


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
    logprobs: dict[str, Any] | None = Field(None, description=LOGPROBS)


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


class EmbedResponse(BaseModel):
    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int
    prompt_eval_count: int | None = None


class EmbeddingResponse(BaseModel):
    embedding: list[float]


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


class LiveProbe(BaseModel):
    status: Literal["alive"]


class ReadyProbe(BaseModel):
    status: Literal["ready", "starting", "draining", "unavailable"]
    checks: dict[str, bool] = Field(description="`store` (answers SELECT 1 within 2 s) and `sandbox` "
                                    "(sandboxed execution available); empty while starting or draining.")


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    model: str
    models: list[str]
    upstream: UpstreamProbe
    embedded_model: dict[str, Any] | None
    sandbox: dict[str, Any]
    user: str = Field(description="Whose workspace the per-workspace parts below are: the caller's "
                      "(`skills`, `in_flight_turns`, `workspace_load_waiting`, `mcp`).")
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


# --- users (docs/users.md) -------------------------------------------------------------------------

class NewUser(BaseModel):
    name: str = Field(description="1-128 characters of letters, digits and . _ @ -, not starting with '.'.")
    role: Literal["user", "frontend", "admin"] = "user"


class UserCreated(BaseModel):
    name: str
    role: Literal["user", "frontend", "admin"]
    key: str = Field(description="The key, shown only now.")
    key_id: str = Field(description="The key's public id (to delete it later).")


class KeyCreated(BaseModel):
    name: str
    key: str = Field(description="The new key, shown only now.")
    key_id: str


class UserUsage(BaseModel):
    sandbox_bytes: int | None = Field(description="Bytes the sandbox folder holds (null: workspace not open).")
    turns: int = Field(description="Chat turns run.")


class UserInfo(BaseModel):
    name: str
    role: Literal["user", "frontend", "admin"]
    created_at: float
    keys: int
    key_ids: list[str]
    usage: UserUsage
    limits: dict[str, int] = Field(description="The user's own limits (the settings' defaults otherwise).")
    workspace_open: bool


class UserList(BaseModel):
    users: list[UserInfo]


class UserLimits(BaseModel):
    max_concurrent_turns: int | None = Field(None, ge=0)
    turns_per_minute: int | None = Field(None, ge=0)
    sandbox_bytes: int | None = Field(None, ge=0)


class UserLimitsSet(BaseModel):
    name: str
    limits: dict[str, int]
