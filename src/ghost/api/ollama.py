"""Ollama's remaining routes, answered by Ghost rather than proxied to an OpenAI upstream.

`/api/ps` lists the served models (with the key, unlike `/api/tags`: it tells what runs now); `/api/embed` and `/api/embeddings` are translated to the
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
from ghost.api.deps import read_json_object, request_id
from ghost.api.services import Services, get_services
from ghost.api.info import model_details, model_digest, model_size
from ghost.errors import Forbidden, NotFound, Unprocessable

keyed = APIRouter(dependencies=[Depends(require_key)])
PULL_STEPS = ("pulling manifest", "verifying sha256 digest", "writing manifest", "success")


@keyed.get("/api/ps", summary="Models Ghost is serving now, Ollama style", **openapi.PS)
async def running(services: Services = Depends(get_services)) -> dict[str, Any]:
    # Ghost serves its models for as long as it runs: "expires" a day ahead, refreshed on each call.
    expires = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    return {"models": [
        {"name": name, "model": name, "size": model_size(services), "digest": model_digest(name),
         "details": model_details(services), "expires_at": expires, "size_vram": 0}
        for name in services.upstream.models
    ]}


# --- embeddings ------------------------------------------------------------------------------


def _upstream_model(asked: str | None, services: Services) -> str:
    asked = asked or services.upstream.default_model
    choice = resolve_model(asked, services.upstream.models)
    if choice is None:
        return asked  # an embedding model only the upstream knows
    return services.upstream.upstream_model(choice.name)  # one of Ghost's: the upstream's name for it


@keyed.post("/api/embed", summary="Embeddings, Ollama style (via the upstream's /v1/embeddings)",
            **openapi.EMBED)
async def embed_many(request: Request, services: Services = Depends(get_services)) -> dict[str, Any]:
    body = parsed(EmbedRequest, await read_json_object(request))
    inputs = [body.input] if isinstance(body.input, str) else body.input
    started = time.perf_counter_ns()
    result = await services.upstream.embed(_upstream_model(body.model, services), inputs, request_id(request))
    reply: dict[str, Any] = {"model": body.model or services.upstream.default_model, "embeddings": result.vectors,
                             "total_duration": time.perf_counter_ns() - started, "load_duration": 0}
    if result.prompt_tokens is not None:
        reply["prompt_eval_count"] = result.prompt_tokens
    return reply


@keyed.post("/api/embeddings", summary="One embedding, Ollama's older route", **openapi.EMBEDDINGS)
async def embed_one(request: Request, services: Services = Depends(get_services)) -> dict[str, Any]:
    body = parsed(EmbeddingsRequest, await read_json_object(request))
    result = await services.upstream.embed(_upstream_model(body.model, services), [body.prompt], request_id(request))
    return {"embedding": result.vectors[0]}


# --- model management ------------------------------------------------------------------------


def _named(body: ModelNameRequest) -> str:
    if name := body.model or body.name:
        return name
    raise Unprocessable("model: the model name is missing")


def _fixed_set(services: Services, action: str) -> Forbidden:
    return Forbidden(f"Ghost serves a fixed set of models ({', '.join(services.upstream.models)}); it cannot {action} "
                     "models. Change the set with --model.")


@keyed.post("/api/pull", summary="Pull a model: succeeds at once for a served model", **openapi.PULL)
async def pull(request: Request, services: Services = Depends(get_services)) -> Response:
    body = parsed(ModelNameRequest, await read_json_object(request))
    name = _named(body)
    if resolve_model(name, services.upstream.models) is None:
        raise NotFound(f"model '{name}' is not served here: {_fixed_set(services, 'pull other').message}")
    if body.stream is False:
        return Response(json.dumps({"status": "success"}), media_type="application/json")
    return StreamingResponse(_status_lines(), media_type="application/x-ndjson")


def _status_lines() -> Iterator[bytes]:
    for step in PULL_STEPS:
        yield json.dumps({"status": step}).encode() + b"\n"


@keyed.delete("/api/delete", summary="Refused: Ghost serves a fixed set of models", **openapi.MANAGE)
async def delete(request: Request, services: Services = Depends(get_services)) -> None:
    name = _named(parsed(ModelNameRequest, await read_json_object(request)))
    if resolve_model(name, services.upstream.models) is None:
        raise NotFound(f"model '{name}' not found")
    raise _fixed_set(services, "delete")


@keyed.post("/api/push", summary="Refused: Ghost serves a fixed set of models", **openapi.MANAGE)
async def push(services: Services = Depends(get_services)) -> None:
    raise _fixed_set(services, "push")


@keyed.post("/api/create", summary="Refused: Ghost serves a fixed set of models", **openapi.MANAGE)
async def create(services: Services = Depends(get_services)) -> None:
    raise _fixed_set(services, "create")


@keyed.post("/api/copy", summary="Refused: Ghost serves a fixed set of models", **openapi.MANAGE)
async def copy(services: Services = Depends(get_services)) -> None:
    raise _fixed_set(services, "copy")
