"""Ollama's remaining routes, answered by Ghost rather than proxied to an OpenAI upstream.

`/api/ps` lists the served models; `/api/embed` and `/api/embeddings` are translated to the
upstream's `/v1/embeddings`; the model-management routes answer in Ollama's shape — a pull of a
served model succeeds at once, everything else says that Ghost serves a fixed set.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from ghost.agent.catalog import resolve_model
from ghost.api import openapi
from ghost.api.auth import require_key
from ghost.api.bodies import EmbeddingsRequest, EmbedRequest, ModelNameRequest, parsed
from ghost.api.deps import get_runtime, read_json_object, request_id
from ghost.api.info import model_details, model_digest, model_size
from ghost.errors import Forbidden, NotFound, Unprocessable
from ghost.llm.embeddings import embed
from ghost.runtime import Runtime

router = APIRouter()
keyed = APIRouter(dependencies=[Depends(require_key)])
PULL_STEPS = ("pulling manifest", "verifying sha256 digest", "writing manifest", "success")


@router.get("/api/ps", summary="Models Ghost is serving now, Ollama style", **openapi.PS)
async def running(runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    # Ghost serves its models for as long as it runs: "expires" a day ahead, refreshed on each call.
    expires = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    return {"models": [
        {"name": name, "model": name, "size": model_size(runtime), "digest": model_digest(name),
         "details": model_details(runtime), "expires_at": expires, "size_vram": 0}
        for name in runtime.models
    ]}


# --- embeddings ------------------------------------------------------------------------------


def _upstream_model(asked: str | None, runtime: Runtime) -> str:
    asked = asked or runtime.default_model
    choice = resolve_model(asked, runtime.models)
    if choice is None:
        return asked  # an embedding model only the upstream knows
    return runtime.settings.upstream_model or choice.name  # one of Ghost's: the upstream's name for it


@keyed.post("/api/embed", summary="Embeddings, Ollama style (via the upstream's /v1/embeddings)",
            **openapi.EMBED)
async def embed_many(request: Request, runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    body = parsed(EmbedRequest, await read_json_object(request))
    inputs = [body.input] if isinstance(body.input, str) else body.input
    started = time.perf_counter_ns()
    result = await embed(runtime, _upstream_model(body.model, runtime), inputs, request_id(request))
    reply: dict[str, Any] = {"model": body.model or runtime.default_model, "embeddings": result.vectors,
                             "total_duration": time.perf_counter_ns() - started, "load_duration": 0}
    if result.prompt_tokens is not None:
        reply["prompt_eval_count"] = result.prompt_tokens
    return reply


@keyed.post("/api/embeddings", summary="One embedding, Ollama's older route", **openapi.EMBEDDINGS)
async def embed_one(request: Request, runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    body = parsed(EmbeddingsRequest, await read_json_object(request))
    result = await embed(runtime, _upstream_model(body.model, runtime), [body.prompt], request_id(request))
    return {"embedding": result.vectors[0]}


# --- model management ------------------------------------------------------------------------


def _named(body: ModelNameRequest) -> str:
    if name := body.model or body.name:
        return name
    raise Unprocessable("model: the model name is missing")


def _fixed_set(runtime: Runtime, action: str) -> Forbidden:
    return Forbidden(f"Ghost serves a fixed set of models ({', '.join(runtime.models)}); it cannot {action} "
                     "models. Change the set with --model.")


@keyed.post("/api/pull", summary="Pull a model: succeeds at once for a served model", **openapi.PULL)
async def pull(request: Request, runtime: Runtime = Depends(get_runtime)) -> Response:
    body = parsed(ModelNameRequest, await read_json_object(request))
    name = _named(body)
    if resolve_model(name, runtime.models) is None:
        raise NotFound(f"model '{name}' is not served here: {_fixed_set(runtime, 'pull other').message}")
    if body.stream is False:
        return Response(json.dumps({"status": "success"}), media_type="application/json")
    return StreamingResponse(_status_lines(), media_type="application/x-ndjson")


def _status_lines() -> Iterator[bytes]:
    for step in PULL_STEPS:
        yield json.dumps({"status": step}).encode() + b"\n"


@keyed.delete("/api/delete", summary="Refused: Ghost serves a fixed set of models", **openapi.MANAGE)
async def delete(request: Request, runtime: Runtime = Depends(get_runtime)) -> None:
    name = _named(parsed(ModelNameRequest, await read_json_object(request)))
    if resolve_model(name, runtime.models) is None:
        raise NotFound(f"model '{name}' not found")
    raise _fixed_set(runtime, "delete")


@keyed.post("/api/push", summary="Refused: Ghost serves a fixed set of models", **openapi.MANAGE)
async def push(runtime: Runtime = Depends(get_runtime)) -> None:
    raise _fixed_set(runtime, "push")


@keyed.post("/api/create", summary="Refused: Ghost serves a fixed set of models", **openapi.MANAGE)
async def create(runtime: Runtime = Depends(get_runtime)) -> None:
    raise _fixed_set(runtime, "create")


@keyed.post("/api/copy", summary="Refused: Ghost serves a fixed set of models", **openapi.MANAGE)
async def copy(runtime: Runtime = Depends(get_runtime)) -> None:
    raise _fixed_set(runtime, "copy")
