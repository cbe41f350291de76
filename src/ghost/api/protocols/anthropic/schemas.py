"""The Messages API's replies as pydantic models: for the OpenAPI document only (the routes send dicts)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class AnthropicErrorDetail(BaseModel):
    type: str = Field(description="`invalid_request_error`, `authentication_error`, `not_found_error`, "
                      "`request_too_large`, `rate_limit_error`, `api_error`, `overloaded_error`, ...")
    message: str


class AnthropicError(BaseModel):
    """The error shape of /v1/messages and /v1/messages/count_tokens: Anthropic's own."""

    type: Literal["error"]
    error: AnthropicErrorDetail


class AnthropicUsage(BaseModel):
    input_tokens: int
    output_tokens: int


class AnthropicMessage(BaseModel):
    """A whole reply: `text`, `thinking` (the model's reasoning, Ghost's tool activity) and `tool_use` blocks."""

    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[dict[str, Any]]
    stop_reason: Literal["end_turn", "max_tokens", "tool_use", "refusal"] | None
    stop_sequence: str | None
    usage: AnthropicUsage


class AnthropicStreamEvent(BaseModel):
    """One event of a streamed reply (`event: <type>`, `data:` this object)."""

    type: Literal["message_start", "content_block_start", "content_block_delta", "content_block_stop",
                  "message_delta", "message_stop", "ping", "error"]


class CountTokensReply(BaseModel):
    input_tokens: int = Field(description="The prompt's tokens as Ghost would send it upstream: its system "
                              "prompt and every tool schema included.")
