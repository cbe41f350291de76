"""A `-plain` model's chat call relayed: the upstream's own reply, chunk by chunk or whole.

`ghost.llm.chat` reads a reply into the agent's values (the answer of choice 0, its tool calls,
usage). A relay must hand on what that reading drops — every choice of `n` > 1, `logprobs`,
fields only that server sends — so it passes each chunk (or the one non-streamed reply) on as
the upstream sent it. What it does not pass on is anything past Ghost's bounds on an upstream
reply (`ghost.llm.bounds`): each chunk's size and nesting, the answer text and tool calls of all
choices together, and a reply of the wrong shape are refused as `UpstreamError`s, as on the
agent's path. The caller puts Ghost's own model name and id back (`ghost.api.plain_relay`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ghost.errors import UpstreamError, error_text
from ghost.llm.bounds import ReplyBounds, UpstreamTooLarge
from ghost.llm.wire import DONE, raise_for_status, read_json, sse_chunks
from ghost.llm.overflow import context_overflow

if TYPE_CHECKING:
    from ghost.llm.transport import UpstreamResponse
    from ghost.llm.upstream import HttpUpstream

TEXT_FIELDS = ("content", "reasoning_content", "reasoning", "refusal")


@dataclass(frozen=True)
class RelayEnd:
    """The relayed stream is complete (the upstream's `[DONE]`, or its last finish reason)."""


@dataclass
class RelayCheck:
    """Ghost's bounds over one relayed reply, all its choices counted together."""

    bounds: ReplyBounds
    text_chars: int = 0
    calls: dict[tuple[int, int], int] = field(default_factory=dict)  # (choice, call index) -> argument chars
    finished: bool = False  # some choice had a finish reason

    def take(self, data: dict[str, Any]) -> None:
        """Check one chunk (or a whole reply); raise if it is an error, too large or malformed."""
        if isinstance(data.get("error"), (dict, str)):
            if (overflow := context_overflow(400, data)) is not None:
                raise overflow
            raise UpstreamError(f"upstream error: {error_text(data['error'])}")
        choices = data.get("choices")
        if choices is None:
            return
        if not isinstance(choices, list):
            raise _wrong_shape(data)
        for choice in choices:
            self._choice(choice, data)

    def _choice(self, choice: Any, data: dict[str, Any]) -> None:
        if not isinstance(choice, dict) or not isinstance(choice.get("index", 0), int):
            raise _wrong_shape(data)
        self.finished = self.finished or bool(choice.get("finish_reason"))
        part = choice.get("delta", choice.get("message"))
        if part is None:
            return
        if not isinstance(part, dict) or not isinstance(part.get("tool_calls") or [], list):
            raise _wrong_shape(data)
        for name in TEXT_FIELDS:
            if isinstance(part.get(name), str):
                self._count_text(len(part[name]))
        for position, call in enumerate(part.get("tool_calls") or []):
            self._call(choice.get("index", 0), position, call, data)

    def _count_text(self, chars: int) -> None:
        self.text_chars += chars
        if self.text_chars > self.bounds.reply_chars:
            raise UpstreamTooLarge(f"upstream reply longer than {self.bounds.reply_chars} characters "
                                   "(--upstream-max-reply-chars)")

    def _call(self, choice: int, position: int, call: Any, data: dict[str, Any]) -> None:
        index = call.get("index", position) if isinstance(call, dict) else None
        function = call.get("function") or {} if isinstance(call, dict) else None
        if not isinstance(index, int) or not isinstance(function, dict):
            raise _wrong_shape(data)
        key = (choice, index)
        if key not in self.calls and sum(1 for c, _ in self.calls if c == choice) >= self.bounds.tool_calls:
            raise UpstreamTooLarge(f"upstream made more than {self.bounds.tool_calls} tool calls in one "
                                   "reply (--upstream-max-tool-calls)")
        arguments = function.get("arguments")
        self.calls[key] = self.calls.get(key, 0) + (len(arguments) if isinstance(arguments, str) else 0)
        if self.calls[key] > self.bounds.tool_call_chars:
            raise UpstreamTooLarge(f"upstream sent tool-call arguments longer than {self.bounds.tool_call_chars} "
                                   "characters (--upstream-max-tool-call-chars)")


def _wrong_shape(data: dict[str, Any]) -> UpstreamError:
    return UpstreamError(f"upstream sent a chat reply of the wrong shape: {str(data)[:120]}")


async def _post(upstream: HttpUpstream, payload: dict[str, Any], request_id: str) -> UpstreamResponse:
    if not upstream.endpoint.exists or upstream.session is None:
        raise UpstreamError("no upstream is configured")
    upstream.check_available()
    headers = [("content-type", "application/json"), *upstream.headers().items(), ("x-request-id", request_id)]
    response = await upstream.session.post(upstream.endpoint.at("/v1/chat/completions"), headers,
                                           upstream.bodies.encode(payload))
    try:
        await raise_for_status(response)
    except BaseException:
        await response.aclose()
        raise
    return response


async def relay_reply(upstream: HttpUpstream, payload: dict[str, Any], request_id: str) -> dict[str, Any]:
    """The upstream's whole (non-streamed) reply to `payload`, checked against the bounds."""
    response = await _post(upstream, {**payload, "stream": False}, request_id)
    try:
        content_type = response.response.headers.get("content-type", "")
        if not content_type.startswith("application/json"):
            raise UpstreamError(f"upstream sent {content_type or 'no content type'} instead of a JSON reply")
        reply = await read_json(response, upstream.bounds)
    finally:
        await response.aclose()
    RelayCheck(upstream.bounds).take(reply)
    return reply


async def relay_stream(upstream: HttpUpstream, payload: dict[str, Any], request_id: str
                       ) -> AsyncIterator[dict[str, Any] | RelayEnd]:
    """The upstream's streamed reply to `payload`, chunk by chunk, then `RelayEnd`."""
    response = await _post(upstream, {**payload, "stream": True}, request_id)
    check, done = RelayCheck(upstream.bounds), False
    try:
        content_type = response.response.headers.get("content-type", "")
        if content_type.startswith("application/json"):  # an upstream that ignored stream=true
            reply = await read_json(response, upstream.bounds)
            check.take(reply)
            yield as_chunk(reply)
            done = True
        elif not content_type.startswith("text/event-stream"):
            raise UpstreamError(f"upstream sent {content_type or 'no content type'} instead of an event stream")
        else:
            async for chunk in sse_chunks(response, upstream.bounds):
                if chunk is DONE:  # `sse_chunks` still drains the body, so the connection is reused
                    done = True
                    continue
                check.take(chunk)
                yield chunk
    finally:
        await response.aclose()
    if not done and not check.finished:
        raise UpstreamError("upstream stream ended before the reply was complete")
    yield RelayEnd()


def as_chunk(reply: dict[str, Any]) -> dict[str, Any]:
    """A whole `chat.completion` as the one chunk of a stream (each choice's message as its delta)."""
    choices = [{**{k: v for k, v in choice.items() if k != "message"}, "delta": choice.get("message") or {}}
               for choice in reply.get("choices") or [] if isinstance(choice, dict)]
    return {**reply, "object": "chat.completion.chunk", "choices": choices}
