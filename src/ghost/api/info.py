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
from ghost.api.deps import read_json_object
from ghost.api.services import Services, get_services
from ghost.errors import NotFound, echo

router = APIRouter()
_STARTED = datetime.now(timezone.utc).isoformat()


@router.get("/", response_class=PlainTextResponse, summary="Liveness, Ollama style", **openapi.ROOT)
@router.head("/", response_class=PlainTextResponse, include_in_schema=False)
async def root() -> str:
    return "Ollama is running"


@router.get("/api/version", summary="Ollama version Ghost is compatible with", **openapi.VERSION)
async def version() -> dict[str, str]:
    return {"version": OLLAMA_COMPAT_VERSION}


def model_meta(services: Services) -> dict[str, Any]:
    """What the model file says (the bundled model's GGUF); {} for a model behind an upstream."""
    return services.bundled.meta if services.bundled is not None else {}


def model_details(services: Services) -> dict[str, Any]:
    meta = model_meta(services)
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


def model_size(services: Services) -> int:
    return model_meta(services).get("size", 0)


@router.get("/api/tags", summary="Models Ghost serves, Ollama style", **openapi.TAGS)
async def tags(services: Services = Depends(get_services)) -> dict[str, Any]:
    return {"models": [
        {"name": choice.listed_name, "model": choice.listed_name, "modified_at": _STARTED,
         "size": model_size(services), "digest": model_digest(choice.listed_name),
         "details": model_details(services)}
        for choice in listed_models(services.upstream.models)
    ]}


@router.post("/api/show", summary="Model metadata, Ollama style", **openapi.SHOW)
async def show(request: Request, services: Services = Depends(get_services)) -> dict[str, Any]:
    body = await read_json_object(request, allow_empty=True)
    asked = body.get("model") or body.get("name") or services.upstream.default_model
    choice = resolve_model(asked, services.upstream.models) if isinstance(asked, str) else None
    if choice is None:
        raise NotFound(f"model '{echo(asked)}' not found")
    name = choice.listed_name
    return {
        "license": "",
        "modelfile": f"# Modelfile served by Ghost\nFROM {name}\n",
        "parameters": "",
        "template": "{{ .Prompt }}",
        "details": (details := model_details(services)),
        "model_info": {"general.architecture": details["family"], "general.basename": name},
        "capabilities": ["completion", "tools"],  # the plain variant relays client tools too
        "modified_at": _STARTED,
    }


@router.get("/v1/models", dependencies=[Depends(require_key)], summary="Models, OpenAI style", **openapi.MODELS)
async def openai_models(services: Services = Depends(get_services)) -> dict[str, Any]:
    created = int(time.time())
    return {"object": "list", "data": [
        {"id": choice.listed_name, "object": "model", "created": created, "owned_by": "ghost"}
        for choice in listed_models(services.upstream.models)
    ]}
