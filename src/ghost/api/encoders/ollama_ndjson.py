"""Events -> Ollama's NDJSON stream (/api/chat and /api/generate), and its one-object replies."""

from __future__ import annotations

from typing import Any, Literal

from ghost.api.encoders.common import (CollectedTurn, ReplyInfo, activity_text, dumps, notice_text,
                                        stream_error_text)
from ghost.api.encoders.openai_sse import completion_object
from ghost.events import (ClientToolCall, Done, Error, Event, Notice, ReasoningDelta, TextDelta, ToolActivity,
                          ToolCall, Usage)


def ollama_tool_calls(calls: list[ToolCall] | tuple[ToolCall, ...]) -> list[dict[str, Any]]:
    out = []
    for call in calls:
        arguments = call.arguments_object()
        if not isinstance(arguments, dict):  # Ollama clients require an object
            arguments = {"arguments": arguments}
        out.append({"function": {"name": call.name, "arguments": arguments}})
    return out


def counters(usage: Usage | None, info: ReplyInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"total_duration": info.elapsed_ns(), "load_duration": 0}
    if usage is not None:
        out.update(prompt_eval_count=usage.prompt_tokens, eval_count=usage.completion_tokens)
    return out


class OllamaStreamEncoder:
    """`mode="chat"` writes `message` objects; `mode="generate"` writes `response` strings."""

    def __init__(self, info: ReplyInfo, mode: Literal["chat", "generate"] = "chat") -> None:
        self.info = info
        self.mode = mode
        self._usage: Usage | None = None

    def _line(self, **fields: Any) -> bytes:
        body = {"model": self.info.model, "created_at": self.info.created_at(), **fields}
        return dumps(body).encode() + b"\n"

    def _piece(self, content: str = "", thinking: str | None = None,
               tool_calls: list[dict[str, Any]] | None = None) -> bytes:
        if self.mode == "generate":
            extra = {"thinking": thinking} if thinking else {}
            return self._line(response=content, done=False, **extra)
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking:
            message["thinking"] = thinking
        if tool_calls:
            message["tool_calls"] = tool_calls
        return self._line(message=message, done=False)

    def encode(self, event: Event) -> bytes:
        if isinstance(event, TextDelta):
            return self._piece(event.text)
        if isinstance(event, ReasoningDelta):
            return self._piece(thinking=event.text)
        if isinstance(event, ToolActivity):
            return self._piece(thinking=activity_text(event)) if self.info.show_activity else b""
        if isinstance(event, ClientToolCall):
            return self._piece(tool_calls=ollama_tool_calls(event.calls))
        if isinstance(event, Usage):
            self._usage = event
            return b""
        if isinstance(event, Done):
            return self._final(event)
        if isinstance(event, Error):
            # Open WebUI turns each Ollama line into an OpenAI chunk and drops an `error` key: its
            # reader would take the cut-off answer for a whole one. So the message goes out as
            # answer text too, before the final `{"error"}` line every Ollama client knows.
            return self._piece(stream_error_text(event)) + dumps({"error": event.message}).encode() + b"\n"
        if isinstance(event, Notice):  # NDJSON has no comments: shown as thinking text
            return self._piece(thinking=notice_text(event))
        return b""  # heartbeats: NDJSON has no comment lines, and idle NDJSON is fine for clients

    def _final(self, done: Done) -> bytes:
        empty = {"response": ""} if self.mode == "generate" else {"message": {"role": "assistant", "content": ""}}
        return self._line(**empty, done=True, done_reason=done.finish_reason, **counters(self._usage, self.info))


def ollama_message(turn: CollectedTurn) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": turn.content}
    if turn.reasoning:
        message["thinking"] = "".join(turn.reasoning)
    if turn.tool_calls:
        message["tool_calls"] = ollama_tool_calls(turn.tool_calls)
    return message


def chat_object(turn: CollectedTurn, info: ReplyInfo) -> dict[str, Any]:
    """/api/chat without streaming: Ollama's shape and OpenAI's in one object."""
    ollama = {"model": info.model, "created_at": info.created_at(), "message": ollama_message(turn),
              "done": True, "done_reason": turn.finish_reason, **counters(turn.usage, info)}
    return {**completion_object(turn, info), **ollama}


def generate_object(turn: CollectedTurn, info: ReplyInfo) -> dict[str, Any]:
    body: dict[str, Any] = {"model": info.model, "created_at": info.created_at(), "response": turn.content,
                            "done": True, "done_reason": turn.finish_reason, **counters(turn.usage, info)}
    if turn.reasoning:
        body["thinking"] = "".join(turn.reasoning)
    return body
