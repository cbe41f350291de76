"""The OpenAI wire side of the fake: a scripted `Reply` as a `chat.completion`, as the chunks of a
streamed one, or as a flood that never stops growing; and stable made-up embeddings.

A request with `n` > 1 gets n choices (the scripted answer, then variants ending " (2)", " (3)"...),
and one with `logprobs: true` a made-up but stable log-probability for each piece, with
`top_logprobs` alternatives (`ReplyOptions`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ghost.testing.fake_upstream.script import Reply, words


@dataclass(frozen=True)
class ReplyOptions:
    """What a request asks of the reply's shape: `n` choices, log-probabilities of each token."""

    n: int = 1
    logprobs: bool = False
    top_logprobs: int = 0

    @classmethod
    def of(cls, body: dict[str, Any]) -> "ReplyOptions":
        n, top = body.get("n"), body.get("top_logprobs")
        return cls(n if isinstance(n, int) and n > 1 else 1, body.get("logprobs") is True,
                   top if isinstance(top, int) and top > 0 else 0)


def fake_embedding(text: str, dimensions: int = 8) -> list[float]:
    """A stable vector for `text`: the same text always gets the same one."""
    digest = hashlib.sha256(text.encode()).digest()
    return [round(byte / 255, 6) for byte in digest[:dimensions]]


def tool_call_entries(reply: Reply) -> list[dict[str, Any]]:
    entries = []
    for index, call in enumerate(reply.tool_calls or []):
        arguments = call.get("arguments", {})
        entries.append({
            "index": index, "id": call.get("id", f"call_{uuid.uuid4().hex[:8]}"), "type": "function",
            "function": {"name": call["name"],
                         "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)},
        })
    return entries


def finish_reason(reply: Reply) -> str:
    return reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")


def completion(reply: Reply, model: str, options: ReplyOptions | None = None) -> dict[str, Any]:
    options = options or ReplyOptions()
    choices = []
    for index, pieces in enumerate(choice_pieces(reply, options.n)):
        message: dict[str, Any] = {"role": "assistant", "content": "".join(pieces) or None}
        if reply.reasoning:
            message["reasoning_content"] = reply.reasoning
        if reply.tool_calls:
            message["tool_calls"] = [{k: v for k, v in e.items() if k != "index"} for e in tool_call_entries(reply)]
        choice = {"index": index, "message": message, "finish_reason": finish_reason(reply)}
        if options.logprobs:
            choice["logprobs"] = {"content": [token_logprob(p, k, options.top_logprobs) for k, p in enumerate(pieces)]}
        choices.append(choice)
    result = {
        "id": f"chatcmpl-fake{uuid.uuid4().hex[:8]}", "object": "chat.completion", "created": int(time.time()),
        "model": model, "choices": choices,
    }
    if reply.usage is not None:
        result["usage"] = reply.usage
    return result


def choice_pieces(reply: Reply, n: int) -> list[list[str]]:
    """The answer pieces of each of `n` choices: the scripted one, then variants ending " (2)", " (3)"..."""
    pieces = reply.pieces()
    return [pieces] + [[*pieces, f" ({index + 1})"] for index in range(1, n)]


def token_logprob(token: str, position: int, top: int) -> dict[str, Any]:
    """A made-up but stable log-probability entry for one token, with `top` alternatives (the token first)."""
    logprob = -round(0.125 * (position + 1), 3)
    alternatives = [{"token": token, "logprob": logprob, "bytes": list(token.encode())}] + [
        {"token": f"alt{k}", "logprob": logprob - k, "bytes": list(f"alt{k}".encode())} for k in range(1, top)]
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": alternatives[:top]}


def stream_chunks(reply: Reply, model: str, include_usage: bool,
                  options: ReplyOptions | None = None) -> list[dict[str, Any]]:
    options = options or ReplyOptions()
    base = {"id": f"chatcmpl-fake{uuid.uuid4().hex[:8]}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model}
    chunks = []
    for index, pieces in enumerate(choice_pieces(reply, options.n)):
        def chunk(delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
            choice = {"index": index, "delta": delta, "finish_reason": finish}
            if options.logprobs:
                choice["logprobs"] = logprobs
            return {**base, "choices": [choice]}

        chunks.append(chunk({"role": "assistant", "content": ""}))
        if reply.reasoning:
            chunks += [chunk({"reasoning_content": piece}) for piece in words(reply.reasoning)]
        # Log-probabilities only when asked: a scripted reply may hold a lone surrogate, which has no bytes.
        chunks += [chunk({"content": piece}, logprobs={"content": [token_logprob(piece, k, options.top_logprobs)]}
                         if options.logprobs else None)
                   for k, piece in enumerate(pieces)]
        for entry in tool_call_entries(reply):
            chunks.append(chunk({"tool_calls": [entry]}))
        chunks.append(chunk({}, finish_reason(reply)))
    if include_usage and reply.usage is not None:
        chunks.append({**base, "choices": [], "usage": reply.usage})
    return chunks


FLOOD_PIECE = 64 * 1024


async def flood_stream(kind: str, size: int, model: str) -> AsyncIterator[bytes]:
    """A stream that never stops growing where a well-behaved upstream would stop."""
    def event(delta: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps({"object": "chat.completion.chunk", "model": model,
                                        "choices": [{"index": 0, "delta": delta}]}).encode() + b"\n\n"

    if kind == "line":
        yield b"data: {\"choices\": [{\"delta\": {\"content\": \""
        for _ in range(size // FLOOD_PIECE):
            yield b"x" * FLOOD_PIECE
            await asyncio.sleep(0)
        return
    if kind == "data_lines":
        piece = b"data: " + b"z" * 1000 + b"\n"
        for _ in range(size // FLOOD_PIECE):
            yield piece * (FLOOD_PIECE // len(piece))
            await asyncio.sleep(0)
        return
    if kind == "calls":
        for index in range(size):
            yield event({"tool_calls": [{"index": index, "id": f"call_{index}", "type": "function",
                                         "function": {"name": "scratchpad_list", "arguments": "{}"}}]})
    elif kind == "arguments":
        yield event({"tool_calls": [{"index": 0, "id": "call_0", "type": "function",
                                     "function": {"name": "scratchpad_set", "arguments": '{"key": "k", "value": "'}}]})
        for _ in range(size // FLOOD_PIECE):
            yield event({"tool_calls": [{"index": 0, "function": {"arguments": "a" * FLOOD_PIECE}}]})
            await asyncio.sleep(0)
    else:
        for _ in range(size // FLOOD_PIECE):
            yield event({"content": "y" * FLOOD_PIECE})
            await asyncio.sleep(0)
    yield b"data: [DONE]\n\n"


