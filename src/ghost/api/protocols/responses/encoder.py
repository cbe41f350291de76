"""Events -> the Responses API: typed SSE events with `sequence_number`, and the response object.

One builder serves both replies: it turns each event of the turn into the protocol's events, in
the protocol's order, while it keeps the response object up to date; a stream sends the events,
a non-streamed reply sends the object. Output items follow the turn: the answer is a `message`
item, the model's own reasoning a `reasoning` item with `reasoning_text` content, Ghost's tool
activity a `reasoning` item with a `summary_text` part, and calls of the client's tools
`function_call` items (the turn ends with them).
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from ghost.api.encoders.common import activity_text, dumps
from ghost.events import ClientToolCall, Done, Error, Event, ReasoningDelta, TextDelta, ToolActivity, Usage

KEEPALIVE = b": keep-alive\n\n"


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {dumps(event)}\n\n".encode()


def usage_object(usage: Usage) -> dict[str, Any]:
    return {"input_tokens": usage.prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": usage.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.total_tokens}


DELTA_EVENT = {"message": "response.output_text.delta", "thinking": "response.reasoning_text.delta",
               "activity": "response.reasoning_summary_text.delta"}


class _OpenItem:
    """The output item being streamed: its kind, its object, and its text so far."""

    def __init__(self, kind: str, item: dict[str, Any], index: int) -> None:
        self.kind, self.item, self.index = kind, item, index
        self.text: list[str] = []
        where = {"item_id": item["id"], "output_index": index}
        self.delta_fields = {**where, "summary_index": 0} if kind == "activity" else {**where, "content_index": 0}
        if kind == "message":
            self.delta_fields["logprobs"] = []


class ResponseBuilder:
    def __init__(self, response_id: str, model: str, created_at: int, echo: dict[str, Any], *,
                 show_activity: bool) -> None:
        self.response: dict[str, Any] = {
            "id": response_id, "object": "response", "created_at": created_at, "status": "in_progress",
            "error": None, "incomplete_details": None, "model": model, "output": [], "usage": None, **echo}
        self.show_activity = show_activity
        self.answer: list[str] = []  # the answer text, for the stored conversation
        self.calls: list[dict[str, Any]] = []  # the client tool calls, OpenAI-shaped
        self._sequence = 0
        self._open: _OpenItem | None = None
        self._usage: Usage | None = None
        self.finished = False  # Done seen: `final()` gives the closing event

    # --- the protocol's events --------------------------------------------------------------------
    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def _snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self.response)

    def start(self) -> list[dict[str, Any]]:
        return [self._event("response.created", response=self._snapshot()),
                self._event("response.in_progress", response=self._snapshot())]

    def feed(self, event: Event) -> list[dict[str, Any]]:
        if isinstance(event, TextDelta):
            self.answer.append(event.text)
            return self._delta("message", event.text)
        if isinstance(event, ReasoningDelta):
            return self._delta("thinking", event.text)
        if isinstance(event, ToolActivity) and self.show_activity:
            return self._delta("activity", activity_text(event))
        if isinstance(event, ClientToolCall):
            return self._close() + [e for call in event.calls for e in self._function_call(call.id, call.name,
                                                                                            call.arguments)]
        if isinstance(event, Usage):
            self._usage = event
        elif isinstance(event, Done):
            return self._done(event)
        return []

    def final(self) -> dict[str, Any]:
        """The closing event; sent after the response is stored, so its id can be continued at once."""
        kind = "response.incomplete" if self.response["status"] == "incomplete" else "response.completed"
        return self._event(kind, response=self._snapshot())

    def fail(self, error: Error) -> list[dict[str, Any]]:
        """A failure after the start: the protocol's `error` event, then `response.failed`."""
        events = self._close()
        self.response["status"] = "failed"
        self.response["error"] = {"code": "server_error", "message": error.message}
        return events + [self._event("error", code=error.type, message=error.message, param=None),
                         self._event("response.failed", response=self._snapshot())]

    # --- items ------------------------------------------------------------------------------------
    def _delta(self, kind: str, text: str) -> list[dict[str, Any]]:
        # The hot path of a stream (one call per token): the open item's event fields are made once.
        events = [] if self._open is not None and self._open.kind == kind else self._close() + self._opened(kind)
        item = self._open
        assert item is not None
        item.text.append(text)
        return [*events, self._event(DELTA_EVENT[kind], **item.delta_fields, delta=text)]

    def _opened(self, kind: str) -> list[dict[str, Any]]:
        index = len(self.response["output"])
        if kind == "message":
            item = {"id": new_id("msg"), "type": "message", "status": "in_progress", "role": "assistant",
                    "content": []}
        else:
            item = {"id": new_id("rs"), "type": "reasoning", "summary": []}
        self._open = _OpenItem(kind, item, index)
        added = self._event("response.output_item.added", output_index=index, item=copy.deepcopy(item))
        where = {"item_id": item["id"], "output_index": index}
        if kind == "activity":
            return [added, self._event("response.reasoning_summary_part.added", **where, summary_index=0,
                                       part={"type": "summary_text", "text": ""})]
        return [added, self._event("response.content_part.added", **where, content_index=0,
                                   part=self._part(kind, ""))]

    @staticmethod
    def _part(kind: str, text: str) -> dict[str, Any]:
        if kind == "message":
            return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        return {"type": "reasoning_text", "text": text}

    def _close(self) -> list[dict[str, Any]]:
        open_item, self._open = self._open, None
        if open_item is None:
            return []
        item, kind, text = open_item.item, open_item.kind, "".join(open_item.text)
        where = {"item_id": item["id"], "output_index": open_item.index}
        if kind == "activity":
            part = {"type": "summary_text", "text": text}
            item["summary"] = [part]
            events = [self._event("response.reasoning_summary_text.done", **where, summary_index=0, text=text),
                      self._event("response.reasoning_summary_part.done", **where, summary_index=0, part=part)]
        else:
            part = self._part(kind, text)
            item["content"] = [part]
            done = "response.output_text.done" if kind == "message" else "response.reasoning_text.done"
            extra = {"logprobs": []} if kind == "message" else {}
            events = [self._event(done, **where, content_index=0, text=text, **extra),
                      self._event("response.content_part.done", **where, content_index=0, part=part)]
        if kind == "message":
            item["status"] = "completed"
        self.response["output"].append(item)
        return events + [self._event("response.output_item.done", output_index=open_item.index,
                                     item=copy.deepcopy(item))]

    def _function_call(self, call_id: str, name: str, arguments: str) -> list[dict[str, Any]]:
        index = len(self.response["output"])
        item = {"id": new_id("fc"), "type": "function_call", "status": "in_progress", "call_id": call_id,
                "name": name, "arguments": ""}
        where = {"item_id": item["id"], "output_index": index}
        events = [self._event("response.output_item.added", output_index=index, item=copy.deepcopy(item)),
                  self._event("response.function_call_arguments.delta", **where, delta=arguments),
                  self._event("response.function_call_arguments.done", **where, name=name, arguments=arguments)]
        item.update(arguments=arguments, status="completed")
        self.response["output"].append(item)
        self.calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})
        return events + [self._event("response.output_item.done", output_index=index, item=copy.deepcopy(item))]

    def _done(self, done: Done) -> list[dict[str, Any]]:
        events = self._close()
        if done.finish_reason == "length":
            self.response["status"] = "incomplete"
            self.response["incomplete_details"] = {"reason": "max_output_tokens"}
        else:
            self.response["status"] = "completed"
        if self._usage is not None:
            self.response["usage"] = usage_object(self._usage)
        self.finished = True
        return events

    def reply_message(self) -> dict[str, Any]:
        """The assistant's turn as the stored conversation keeps it (OpenAI-shaped)."""
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.answer) or None}
        if self.calls:
            message["tool_calls"] = self.calls
        elif message["content"] is None:
            message["content"] = ""
        return message
