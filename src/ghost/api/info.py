"""Ollama-compatible info routes and the OpenAI model list."""

from __future__ import annotations

import hashlib
import time
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from ghost import OLLAMA_COMPAT_VERSION
from ghost.agent.catalog import listed_models, resolve_model
from ghost.api import openapi
from ghost.api.auth import require_key
from ghost.api.deps import get_runtime, read_json_object
from ghost.errors import NotFound, echo
from ghost.runtime import Runtime

router = APIRouter()
_STARTED = datetime.now(timezone.utc).isoformat()


@router.get("/", response_class=PlainTextResponse, summary="Liveness, Ollama style", **openapi.ROOT)
@router.head("/", response_class=PlainTextResponse, include_in_schema=False)
async def root() -> str:
    return "Ollama is running"


@router.get("/api/version", summary="Ollama version Ghost is compatible with", **openapi.VERSION)
async def version() -> dict[str, str]:
    return {"version": OLLAMA_COMPAT_VERSION}


def model_details(runtime: Runtime) -> dict[str, Any]:
    meta = runtime.extras.get("model_meta", {})
    family = meta.get("family", "qwen3")
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": meta.get("parameter_size", "unknown"),
        "quantization_level": meta.get("quantization_level", "unknown"),
    }


def model_digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def model_size(runtime: Runtime) -> int:
    return runtime.extras.get("model_meta", {}).get("size", 0)


@router.get("/api/tags", summary="Models Ghost serves, Ollama style", **openapi.TAGS)
async def tags(runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    return {"models": [
        {"name": choice.listed_name, "model": choice.listed_name, "modified_at": _STARTED,
         "size": model_size(runtime), "digest": model_digest(choice.listed_name),
         "details": model_details(runtime)}
        for choice in listed_models(runtime.models)
    ]}


@router.post("/api/show", summary="Model metadata, Ollama style", **openapi.SHOW)
async def show(request: Request, runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    body = await read_json_object(request, allow_empty=True)
    asked = body.get("model") or body.get("name") or runtime.default_model
    choice = resolve_model(asked, runtime.models) if isinstance(asked, str) else None
    if choice is None:
        raise NotFound(f"model '{echo(asked)}' not found")
    name = choice.listed_name
    return {
        "license": "",
        "modelfile": f"# Modelfile served by Ghost\nFROM {name}\n",
        "parameters": "",
        "template": "{{ .Prompt }}",
        "details": (details := model_details(runtime)),
        "model_info": {"general.architecture": details["family"], "general.basename": name},
        "capabilities": ["completion", "tools"],  # the plain variant relays client tools too
        "modified_at": _STARTED,
    }


@router.get("/v1/models", dependencies=[Depends(require_key)], summary="Models, OpenAI style", **openapi.MODELS)
async def openai_models(runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    created = int(time.time())
    return {"object": "list", "data": [
        {"id": choice.listed_name, "object": "model", "created": created, "owned_by": "ghost"}
        for choice in listed_models(runtime.models)
    ]}
