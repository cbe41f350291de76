"""Events -> Anthropic's Messages events, sent as SSE or folded into one message: one code path.

`MessageEvents` turns each of the turn's events into the Anthropic events it stands for, in
Anthropic's order: `message_start`, then per content block `content_block_start`, its
`content_block_delta`s and `content_block_stop`, then `message_delta` (stop reason, usage) and
`message_stop`; `ping` while idle; `error` when the turn fails after the start. The answer is
`text` blocks, the model's reasoning and Ghost's own tool activity `thinking` blocks, a call of a
client tool a `tool_use` block. The streaming reply writes those events as SSE
(`AnthropicStreamEncoder`); the non-streaming reply applies the very same events to a message
(`MessageFolder`), so the two cannot disagree.
"""

from __future__ import annotations

import json
from typing import Any

from ghost.api.encoders.common import ReplyInfo, activity_text, dumps, notice_text
from ghost.events import (ClientToolCall, Done, Error, Event, Heartbeat, Notice, ReasoningDelta, TextDelta,
                          ToolActivity, ToolCall, Usage)

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}

# Anthropic's error types, by HTTP status (its SDKs pick the exception class by status).
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 422: "invalid_request_error",
               429: "rate_limit_error", 503: "overloaded_error", 504: "timeout_error"}
# Ghost's error types that can arrive in a stream, as Anthropic names them.
_STREAM_ERROR_TYPES = {"invalid_request_error": "invalid_request_error", "context_length_exceeded":
                       "invalid_request_error", "rate_limit_error": "rate_limit_error",
                       "model_unavailable": "overloaded_error", "upstream_timeout": "timeout_error"}


def error_type_for_status(status: int) -> str:
    return ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def error_object(message: str, error_type: str) -> dict[str, Any]:
    """Anthropic's error shape: the body of an error reply, and the data of an `error` event."""
    return {"type": "error", "error": {"type": error_type, "message": message}}


def stop_reason(finish_reason: str) -> str:
    return STOP_REASONS.get(finish_reason, "end_turn")


def tool_input(call: ToolCall) -> dict[str, Any]:
    arguments = call.arguments_object()
    return arguments if isinstance(arguments, dict) else {"arguments": arguments}  # Anthropic requires an object


class MessageEvents:
    """One reply's state: which content block is open, its index, the usage seen so far."""

    def __init__(self, info: ReplyInfo, *, thinking: bool = True) -> None:
        self.info = info
        self.thinking = thinking  # False: the client turned thinking off; no thinking blocks at all
        self._started = False
        self._open: str | None = None  # the type of the open content block
        self._index = -1
        self._usage: Usage | None = None

    @property
    def message_id(self) -> str:
        return f"msg_{self.info.request_id}"

    def events(self, event: Event) -> list[dict[str, Any]]:
        if isinstance(event, Error):
            return [error_object(event.message, _STREAM_ERROR_TYPES.get(event.type, "api_error"))]
        if isinstance(event, Usage):
            self._usage = event
            return []
        if isinstance(event, (Heartbeat, Notice)):
            return self._start() if isinstance(event, Notice) else [*self._start(), {"type": "ping"}]
        return self._start() + self._content(event)

    def _start(self) -> list[dict[str, Any]]:
        if self._started:
            return []
        self._started = True
        message = {"id": self.message_id, "type": "message", "role": "assistant", "model": self.info.model,
                   "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": 0, "output_tokens": 0}}
        return [{"type": "message_start", "message": message}, {"type": "ping"}]

    def _content(self, event: Event) -> list[dict[str, Any]]:
        if isinstance(event, TextDelta):
            return self._delta("text", {"type": "text_delta", "text": event.text}) if event.text else []
        if isinstance(event, ReasoningDelta):
            if not (self.thinking and event.text):
                return []
            return self._delta("thinking", {"type": "thinking_delta", "thinking": event.text})
        if isinstance(event, ToolActivity):
            if not (self.thinking and self.info.show_activity):
                return []
            return self._delta("thinking", {"type": "thinking_delta", "thinking": activity_text(event)})
        if isinstance(event, ClientToolCall):
            return [item for call in event.calls for item in self._tool_use(call)]
        if isinstance(event, Done):
            return [*self._close(), self._message_delta(event), {"type": "message_stop"}]
        return []

    def _delta(self, kind: str, delta: dict[str, Any]) -> list[dict[str, Any]]:
        opened = self._open_block(kind, {"type": "text", "text": ""} if kind == "text"
                                  else {"type": "thinking", "thinking": "", "signature": ""})
        return [*opened, {"type": "content_block_delta", "index": self._index, "delta": delta}]

    def _open_block(self, kind: str, block: dict[str, Any]) -> list[dict[str, Any]]:
        if self._open == kind and kind != "tool_use":
            return []
        closed = self._close()
        self._index += 1
        self._open = kind
        return [*closed, {"type": "content_block_start", "index": self._index, "content_block": block}]

    def _close(self) -> list[dict[str, Any]]:
        if self._open is None:
            return []
        self._open = None
        return [{"type": "content_block_stop", "index": self._index}]

    def _tool_use(self, call: ToolCall) -> list[dict[str, Any]]:
        opened = self._open_block("tool_use", {"type": "tool_use", "id": call.id, "name": call.name, "input": {}})
        delta = {"type": "content_block_delta", "index": self._index,
                 "delta": {"type": "input_json_delta", "partial_json": dumps(tool_input(call))}}
        return [*opened, delta, *self._close()]

    def _message_delta(self, done: Done) -> dict[str, Any]:
        usage = self._usage
        return {"type": "message_delta", "delta": {"stop_reason": stop_reason(done.finish_reason), "stop_sequence": None},
                "usage": {"input_tokens": usage.prompt_tokens if usage else 0,
                          "output_tokens": usage.completion_tokens if usage else 0}}


class AnthropicStreamEncoder:
    """The turn's events as Anthropic's SSE stream (`event: <type>` and `data: <json>` per event)."""

    media_type = "text/event-stream"

    def __init__(self, info: ReplyInfo, *, thinking: bool = True) -> None:
        self.info = info
        self.state = MessageEvents(info, thinking=thinking)

    def encode(self, event: Event) -> bytes:
        out = b"".join(sse(item) for item in self.state.events(event))
        if isinstance(event, Notice):  # a comment line: seen by curl and in logs, skipped by SDKs
            out += f": ghost warning: {notice_text(event).strip()}\n\n".encode()
        return out


def sse(item: dict[str, Any]) -> bytes:
    return f"event: {item['type']}\ndata: {dumps(item)}\n\n".encode()


class MessageFolder:
    """Anthropic's events applied to one message object, as its SDKs accumulate a stream. (A failure
    never reaches it: without a stream the turn's error is raised and answered with a status.)"""

    def __init__(self) -> None:
        self.message: dict[str, Any] = {}
        self._json: dict[int, list[str]] = {}  # a tool_use block's input, as its pieces came

    def apply(self, item: dict[str, Any]) -> None:
        kind = item["type"]
        if kind == "message_start":
            self.message = json.loads(dumps(item["message"]))  # its own copy
        elif kind == "content_block_start":
            self.message["content"].append(dict(item["content_block"]))
        elif kind == "content_block_delta":
            self._apply_delta(item["index"], item["delta"])
        elif kind == "content_block_stop":
            parts = self._json.pop(item["index"], None)
            if parts is not None:
                self.message["content"][item["index"]]["input"] = json.loads("".join(parts))
        elif kind == "message_delta":
            self.message.update(item["delta"])
            self.message["usage"].update(item["usage"])

    def _apply_delta(self, index: int, delta: dict[str, Any]) -> None:
        block = self.message["content"][index]
        if delta["type"] == "text_delta":
            block["text"] += delta["text"]
        elif delta["type"] == "thinking_delta":
            block["thinking"] += delta["thinking"]
        elif delta["type"] == "input_json_delta":
            self._json.setdefault(index, []).append(delta["partial_json"])
