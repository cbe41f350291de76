"""One streaming chat-completion call to the upstream, as a stream of small typed values.

`stream_chat` hides the OpenAI SSE wire format: it yields `Delta`s (answer text or reasoning,
with `<think>` blocks already split out) and finally one `Completion` (tool calls, finish reason,
usage). Failures raise `UpstreamError` subclasses. Closing the iterator closes the HTTP response.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ghost.errors import UpstreamError, error_text
from ghost.events import ToolCall, Usage
from ghost.jsondepth import too_deep
from ghost.llm.bounds import ReplyBounds, UpstreamTooLarge
from ghost.llm.overflow import context_overflow
from ghost.llm.think import ThinkSplitter
from ghost.llm.wire import DONE, ChunkReader, drain, raise_for_status, read_json

if TYPE_CHECKING:
    from ghost.llm.upstream import HttpUpstream


@dataclass(frozen=True)
class Delta:
    kind: Literal["content", "reasoning"]
    text: str


@dataclass
class Completion:
    tool_calls: list[ToolCall]
    finish_reason: str
    usage: Usage | None
    upstream_seconds: float = 0.0


MAX_TOOL_NAME_CHARS = 256
MAX_TOOL_ID_CHARS = 128
INVALID_TOOL_NAME = "invalid_tool_name"  # stands in for a name that was not a string


@dataclass
class _ToolCallParts:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    argument_chars: int = 0
    problem: str = ""  # why the call is malformed; the model is told instead of the tool running


class _Accumulator:
    """Collects what arrives across chunks: tool-call fragments, finish reason, usage."""

    def __init__(self, bounds: ReplyBounds) -> None:
        self.bounds = bounds
        self.splitter = ThinkSplitter()
        self.calls: dict[int, _ToolCallParts] = {}
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.done = False
        self.text_chars = 0

    def chunk(self, data: dict[str, Any]) -> list[Delta]:
        if isinstance(data.get("error"), (dict, str)):
            if (overflow := context_overflow(400, data)) is not None:
                raise overflow
            raise UpstreamError(f"upstream error: {error_text(data['error'])}")
        if isinstance(data.get("usage"), dict):
            self.usage = _usage(data["usage"]) or self.usage
        out: list[Delta] = []
        for choice in data.get("choices") or []:
            if choice.get("index", 0) == 0:  # a relayed `n` > 1: the first choice is the reply (docs/clients.md)
                out += self._choice(choice)
        return out

    def _choice(self, choice: dict[str, Any]) -> list[Delta]:
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        delta = choice.get("delta") or choice.get("message") or {}
        out = []
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            self._count_text(reasoning)
            out.append(Delta("reasoning", reasoning))
        if isinstance(delta.get("content"), str) and delta["content"]:
            self._count_text(delta["content"])
            out += [Delta(kind, text) for kind, text in self.splitter.feed(delta["content"])]
        for call in delta.get("tool_calls") or []:
            self._tool_call(call)
        return out

    def _count_text(self, text: str) -> None:
        self.text_chars += len(text)
        if self.text_chars > self.bounds.reply_chars:
            raise UpstreamTooLarge(f"upstream reply longer than {self.bounds.reply_chars} characters "
                                   "(--upstream-max-reply-chars)")

    def _tool_call(self, call: dict[str, Any]) -> None:
        index = int(call.get("index", len(self.calls)))
        if index not in self.calls and len(self.calls) >= self.bounds.tool_calls:
            raise UpstreamTooLarge(f"upstream made more than {self.bounds.tool_calls} tool calls in one "
                                   "reply (--upstream-max-tool-calls)")
        parts = self.calls.setdefault(index, _ToolCallParts())
        if isinstance(call.get("id"), (str, int)) and call["id"] != "":
            parts.id = str(call["id"])[:MAX_TOOL_ID_CHARS]
        function = call.get("function") or {}
        _take_name(parts, function.get("name"))
        _take_arguments(parts, function.get("arguments"), self.bounds.tool_call_chars)

    def tool_calls(self) -> list[ToolCall]:
        return [_finished_call(index, p, self.bounds) for index, p in sorted(self.calls.items()) if p.name]


def _take_name(parts: _ToolCallParts, name: Any) -> None:
    """The call's name (servers send it once or repeat it); one that is not a short string marks
    the call malformed, never a crash further on."""
    if name is None or name == "":
        return
    if not isinstance(name, str):
        parts.problem = parts.problem or f"the tool name must be a string, not {type(name).__name__}"
        parts.name = INVALID_TOOL_NAME
    elif len(name) > MAX_TOOL_NAME_CHARS:
        parts.problem = parts.problem or f"the tool name is longer than {MAX_TOOL_NAME_CHARS} characters"
        parts.name = name[:MAX_TOOL_NAME_CHARS]
    elif not parts.problem:
        parts.name = name


def _take_arguments(parts: _ToolCallParts, arguments: Any, max_chars: int) -> None:
    if arguments is None or arguments == "":
        return
    if isinstance(arguments, dict):  # some servers send the object itself
        arguments = json.dumps(arguments)
    elif not isinstance(arguments, str):
        parts.problem = parts.problem or f"the arguments must be a JSON object, not {type(arguments).__name__}"
        return
    parts.argument_chars += len(arguments)
    if parts.argument_chars > max_chars:
        raise UpstreamTooLarge(f"upstream sent tool-call arguments longer than {max_chars} characters "
                               "(--upstream-max-tool-call-chars)")
    parts.arguments.append(arguments)


def _finished_call(index: int, parts: _ToolCallParts, bounds: ReplyBounds) -> ToolCall:
    arguments = "".join(parts.arguments)
    problem = parts.problem or _arguments_problem(arguments, bounds.json_depth)
    return ToolCall(id=parts.id or f"call_{index}", name=parts.name, arguments="" if problem else arguments,
                    problem=problem)


def _arguments_problem(arguments: str, max_depth: int) -> str:
    """Why these arguments must not be parsed at all, or "". (Arguments that are not JSON, or not
    an object, are the tool registry's to report, as they always were.)"""
    if too_deep(arguments.encode("utf-8", "surrogatepass"), max_depth):
        return f"the arguments nest deeper than {max_depth} levels"
    return ""


def _usage(raw: dict[str, Any]) -> Usage | None:
    prompt, completion = raw.get("prompt_tokens"), raw.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        return Usage(prompt, completion)
    return None


def _checked_chunk(acc: _Accumulator, chunk: dict[str, Any]) -> list[Delta]:
    """acc.chunk, with a chunk of the wrong shape (`"choices": 5`, a string delta) an upstream
    error rather than an AttributeError that would surface as a 500."""
    try:
        return acc.chunk(chunk)
    except (AttributeError, TypeError, ValueError) as exc:
        raise UpstreamError(f"upstream sent a stream chunk of the wrong shape: {str(chunk)[:120]}") from exc


async def stream_chat(upstream: HttpUpstream, payload: dict[str, Any], request_id: str
                      ) -> AsyncIterator[Delta | Completion]:
    """The reply to `payload`: its deltas as they arrive, then one `Completion`.

    One flat loop per network read: the read is split into chunks (`ChunkReader`), each chunk is
    parsed once and its deltas are yielded from here, with no generator in between.
    """
    url = upstream.endpoint.at("/v1/chat/completions")
    headers = [("content-type", "application/json"), *upstream.headers().items(), ("x-request-id", request_id)]
    acc = _Accumulator(upstream.bounds)
    started = time.perf_counter()
    if not upstream.endpoint.exists or upstream.session is None:
        raise UpstreamError("no upstream is configured")
    upstream.check_available()
    body = upstream.bodies.encode(payload)
    response = await upstream.session.post(url, headers, body)
    try:
        await raise_for_status(response)
        content_type = response.response.headers.get("content-type", "")
        if content_type.startswith("application/json"):  # an upstream that ignored stream=true
            for delta in _checked_chunk(acc, await read_json(response, acc.bounds)):
                yield delta
            acc.done = True
        elif not content_type.startswith("text/event-stream"):
            raise UpstreamError(f"upstream sent {content_type or 'no content type'} instead of an event stream")
        else:
            reader = ChunkReader(acc.bounds)
            async for piece in response:
                for event in reader.feed(piece):
                    if (chunk := reader.parse(event)) is DONE:
                        acc.done = True
                        break
                    for delta in _checked_chunk(acc, chunk):
                        yield delta
                if acc.done:
                    await drain(response)  # so the connection goes back to the pool
                    break
            else:
                for event in reader.close():
                    if (chunk := reader.parse(event)) is DONE:
                        acc.done = True
                        break
                    for delta in _checked_chunk(acc, chunk):
                        yield delta
    finally:
        await response.aclose()  # read to its end: back to the pool; else the connection is closed
    for kind, text in acc.splitter.flush():
        yield Delta(kind, text)
    if not acc.done and acc.finish_reason is None:
        raise UpstreamError("upstream stream ended before the reply was complete")
    calls = acc.tool_calls()
    finish = "tool_calls" if calls else (acc.finish_reason or "stop")
    yield Completion(calls, finish, acc.usage, time.perf_counter() - started)
