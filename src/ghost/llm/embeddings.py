"""Embeddings from the upstream's OpenAI `/v1/embeddings`, for Ollama's `/api/embed` routes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from ghost.errors import UpstreamError, error_text
from ghost.llm.wire import MAX_ERROR_BODY
from ghost.llm.transport_errors import upstream_errors

if TYPE_CHECKING:
    from ghost.llm.upstream import HttpUpstream


@dataclass(frozen=True)
class Embeddings:
    vectors: list[list[float]]
    prompt_tokens: int | None


async def embed(upstream: HttpUpstream, model: str, inputs: list[str], request_id: str) -> Embeddings:
    """One upstream call for all `inputs`; UpstreamError (502/504) when it fails or has no such route."""
    if not upstream.endpoint.exists:
        raise UpstreamError("no upstream is configured")
    headers = {**upstream.headers(), "x-request-id": request_id}
    with upstream_errors():
        response = await upstream.http.post(upstream.endpoint.at("/v1/embeddings"), headers=headers,
                                            json={"model": model, "input": inputs})
    if response.status_code in (404, 405, 501):
        raise UpstreamError(f"the upstream has no embeddings endpoint (/v1/embeddings answered "
                            f"{response.status_code}); use an upstream that serves embeddings")
    if response.status_code != 200:
        raise UpstreamError(f"upstream embeddings answered {response.status_code}: "
                            f"{_error_detail(response)}")
    return _parsed(response.content, len(inputs))


def _parsed(body: bytes, expected: int) -> Embeddings:
    try:
        reply = json.loads(body)
        rows = sorted(reply["data"], key=lambda row: row.get("index", 0))
        vectors = [[float(x) for x in row["embedding"]] for row in rows]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise UpstreamError("the upstream's embeddings reply is not OpenAI-shaped") from exc
    if len(vectors) != expected:
        raise UpstreamError(f"the upstream returned {len(vectors)} embeddings for {expected} inputs")
    usage: Any = reply.get("usage") if isinstance(reply, dict) else None
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return Embeddings(vectors, tokens if isinstance(tokens, int) else None)


def _error_detail(response: httpx.Response) -> str:
    """The upstream's error message (scrubbed of stack frames and paths), from its JSON or its text."""
    text = response.text[:MAX_ERROR_BODY]
    try:
        error = json.loads(text).get("error")
    except (ValueError, AttributeError):
        error = None
    return error_text(error if error else text)[:MAX_ERROR_BODY // 16]
