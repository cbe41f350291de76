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
from typing import Any, Literal

import anyio
import httpx

from ghost.agent.events import ToolCall, Usage
from ghost.agent.think import ThinkSplitter
from ghost.errors import UpstreamError
from ghost.llm.availability import check_model_available
from ghost.llm.client import upstream_errors
from ghost.runtime import Runtime

MAX_ERROR_BODY = 4096
DRAIN_SECONDS = 1.0


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


@dataclass
class _ToolCallParts:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class _Accumulator:
    """Collects what arrives across chunks: tool-call fragments, finish reason, usage."""

    def __init__(self) -> None:
        self.splitter = ThinkSplitter()
        self.calls: dict[int, _ToolCallParts] = {}
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.done = False

    def chunk(self, data: dict[str, Any]) -> list[Delta]:
        if isinstance(data.get("error"), (dict, str)):
            raise UpstreamError(f"upstream error: {_error_text(data['error'])}")
        if isinstance(data.get("usage"), dict):
            self.usage = _usage(data["usage"]) or self.usage
        out: list[Delta] = []
        for choice in data.get("choices") or []:
            out += self._choice(choice)
        return out

    def _choice(self, choice: dict[str, Any]) -> list[Delta]:
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        delta = choice.get("delta") or choice.get("message") or {}
        out = []
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            out.append(Delta("reasoning", reasoning))
        if isinstance(delta.get("content"), str) and delta["content"]:
            out += [Delta(kind, text) for kind, text in self.splitter.feed(delta["content"])]
        for call in delta.get("tool_calls") or []:
            self._tool_call(call)
        return out

    def _tool_call(self, call: dict[str, Any]) -> None:
        parts = self.calls.setdefault(int(call.get("index", len(self.calls))), _ToolCallParts())
        parts.id = call.get("id") or parts.id
        function = call.get("function") or {}
        parts.name = function.get("name") or parts.name
        arguments = function.get("arguments")
        if arguments:
            parts.arguments.append(arguments if isinstance(arguments, str) else json.dumps(arguments))

    def tool_calls(self) -> list[ToolCall]:
        return [ToolCall(id=p.id or f"call_{index}", name=p.name, arguments="".join(p.arguments))
                for index, p in sorted(self.calls.items()) if p.name]


def _usage(raw: dict[str, Any]) -> Usage | None:
    prompt, completion = raw.get("prompt_tokens"), raw.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        return Usage(prompt, completion)
    return None


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


async def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code == 200:
        return
    body = b""
    async for piece in response.aiter_bytes():
        body += piece
        if len(body) > MAX_ERROR_BODY:
            break
    try:
        detail = _error_text(json.loads(body).get("error") or body[:300].decode(errors="replace"))
    except (ValueError, AttributeError):
        detail = body[:300].decode(errors="replace").strip() or response.reason_phrase
    raise UpstreamError(f"upstream answered {response.status_code}: {detail}")


def _sse_data(line: str) -> str | None:
    if not line.startswith("data:"):
        return None
    return line[5:].strip()


async def _sse_chunks(response: httpx.Response) -> AsyncIterator[dict[str, Any] | None]:
    """Each parsed `data:` JSON object; None for the `[DONE]` marker.

    After [DONE] the rest of the body (normally just the chunked terminator) is still read, so
    the pooled connection can be reused: httpx closes a connection whose response was left unread.
    """
    lines = response.aiter_lines()
    async for line in lines:
        data = _sse_data(line)
        if data is None or data == "":
            continue
        if data == "[DONE]":
            yield None
            with anyio.move_on_after(DRAIN_SECONDS):  # never wait long on a server that lingers
                async for _ in lines:
                    pass
            return
        try:
            parsed = json.loads(data)
        except ValueError as exc:
            raise UpstreamError(f"upstream sent malformed stream data: {data[:120]!r}") from exc
        if not isinstance(parsed, dict):
            raise UpstreamError("upstream sent a stream chunk that is not a JSON object")
        yield parsed


async def _read_json(response: httpx.Response) -> dict[str, Any]:
    body = await response.aread()
    try:
        parsed = json.loads(body)
    except ValueError as exc:
        raise UpstreamError("upstream sent a reply that is neither SSE nor JSON") from exc
    if not isinstance(parsed, dict):
        raise UpstreamError("upstream sent a JSON reply that is not an object")
    return parsed


async def _deltas(response: httpx.Response, acc: _Accumulator) -> AsyncIterator[Delta]:
    content_type = response.headers.get("content-type", "")
    if content_type.startswith("application/json"):  # an upstream that ignored stream=true
        for delta in _checked_chunk(acc, await _read_json(response)):
            yield delta
        acc.done = True
        return
    if not content_type.startswith("text/event-stream"):
        raise UpstreamError(f"upstream sent {content_type or 'no content type'} instead of an event stream")
    async for chunk in _sse_chunks(response):
        if chunk is None:
            acc.done = True
            return
        for delta in _checked_chunk(acc, chunk):
            yield delta


def _checked_chunk(acc: _Accumulator, chunk: dict[str, Any]) -> list[Delta]:
    """acc.chunk, with a chunk of the wrong shape (`"choices": 5`, a string delta) an upstream
    error rather than an AttributeError that would surface as a 500."""
    try:
        return acc.chunk(chunk)
    except (AttributeError, TypeError, ValueError) as exc:
        raise UpstreamError(f"upstream sent a stream chunk of the wrong shape: {str(chunk)[:120]}") from exc


async def stream_chat(runtime: Runtime, payload: dict[str, Any], request_id: str) -> AsyncIterator[Delta | Completion]:
    url = f"{runtime.upstream_url}/v1/chat/completions"
    headers = {**runtime.upstream_headers(), "x-request-id": request_id}
    acc = _Accumulator()
    started = time.perf_counter()
    if not runtime.upstream_url:
        raise UpstreamError("no upstream is configured")
    check_model_available(runtime)
    with upstream_errors():
        async with runtime.http.stream("POST", url, json=payload, headers=headers) as response:
            await _raise_for_status(response)
            async for delta in _deltas(response, acc):
                yield delta
    for kind, text in acc.splitter.flush():
        yield Delta(kind, text)
    if not acc.done and acc.finish_reason is None:
        raise UpstreamError("upstream stream ended before the reply was complete")
    calls = acc.tool_calls()
    finish = "tool_calls" if calls else (acc.finish_reason or "stop")
    yield Completion(calls, finish, acc.usage, time.perf_counter() - started)
