"""Events -> OpenAI Chat Completions: SSE chunks, or one `chat.completion` object."""

from __future__ import annotations

from typing import Any

from ghost.api.encoders.common import CollectedTurn, ReplyInfo, activity_text, dumps
from ghost.errors import error_body
from ghost.events import (ClientToolCall, Done, Error, Event, Heartbeat, Notice, ReasoningDelta, TextDelta,
                          ToolActivity, ToolCall, Usage)

DONE_LINE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"


def usage_object(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}


def tool_call_objects(calls: list[ToolCall] | tuple[ToolCall, ...], *, indexed: bool) -> list[dict[str, Any]]:
    if not indexed:
        return [call.openai_object() for call in calls]
    return [{"index": index, **call.openai_object()} for index, call in enumerate(calls)]


def sse_error(message: str, error_type: str) -> bytes:
    body = dumps(error_body(message, error_type))
    return f"event: error\ndata: {body}\n\n".encode() + DONE_LINE


def _chunk_head(info: ReplyInfo) -> bytes:
    """What every chunk of one reply starts with, up to its delta: the same bytes `dumps` makes of the
    whole chunk (the keys in the same order), encoded once per reply rather than once per chunk."""
    return (f'data: {{"id":{dumps(info.completion_id)},"object":"chat.completion.chunk",'
            f'"created":{dumps(info.created)},"model":{dumps(info.model)},"choices":[{{"index":0,"delta":').encode()


_OPEN_TAIL = b',"finish_reason":null}]}\n\n'


class OpenAIStreamEncoder:
    def __init__(self, info: ReplyInfo) -> None:
        self.info = info
        self._started = False
        self._usage: Usage | None = None
        self._head = _chunk_head(info)

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        tail = _OPEN_TAIL if finish_reason is None else f',"finish_reason":{dumps(finish_reason)}}}]}}\n\n'.encode()
        return self._head + dumps(delta).encode() + tail

    def _role_first(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return self._chunk({"role": "assistant", "content": ""})

    def encode(self, event: Event) -> bytes:
        if isinstance(event, Heartbeat):
            return KEEPALIVE
        if isinstance(event, Error):
            return sse_error(event.message, event.type)
        if isinstance(event, Notice):  # a comment line: seen in logs and by curl, ignored by clients
            return f": ghost warning: {event.text}\n\n".encode()
        if isinstance(event, Usage):
            self._usage = event
            return b""
        return self._role_first() + self._encode_content(event)

    def _encode_content(self, event: Event) -> bytes:
        if isinstance(event, TextDelta):
            return self._chunk({"content": event.text})
        if isinstance(event, ReasoningDelta):
            return self._chunk({"reasoning_content": event.text})
        if isinstance(event, ToolActivity):
            comment = f": ghost tool {event.phase} {event.name}\n\n".encode()
            shown = self._chunk({"reasoning_content": activity_text(event)}) if self.info.show_activity else b""
            return comment + shown
        if isinstance(event, ClientToolCall):
            return self._chunk({"tool_calls": tool_call_objects(event.calls, indexed=True)})
        if isinstance(event, Done):
            return self._chunk({}, event.finish_reason) + self._usage_chunk() + DONE_LINE
        return b""

    def _usage_chunk(self) -> bytes:
        if not (self.info.include_usage and self._usage):
            return b""
        body = {"id": self.info.completion_id, "object": "chat.completion.chunk", "created": self.info.created,
                "model": self.info.model, "choices": [], "usage": usage_object(self._usage)}
        return b"data: " + dumps(body).encode() + b"\n\n"


def completion_object(turn: CollectedTurn, info: ReplyInfo) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": turn.content if turn.content or not turn.tool_calls else None}
    if turn.reasoning:
        message["reasoning_content"] = "".join(turn.reasoning)
    if turn.tool_calls:
        message["tool_calls"] = tool_call_objects(turn.tool_calls, indexed=False)
    body: dict[str, Any] = {"id": info.completion_id, "object": "chat.completion", "created": info.created,
                            "model": info.model,
                            "choices": [{"index": 0, "message": message, "finish_reason": turn.finish_reason}]}
    if turn.usage:
        body["usage"] = usage_object(turn.usage)
    return body
