"""Chat routes: thin handlers over the one chat service."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from ghost.agent.service import ChatService, Wire
from ghost.api import openapi
from ghost.api.auth import require_key
from ghost.api.deps import read_json_object, request_id
from ghost.api.services import services_of

router = APIRouter(dependencies=[Depends(require_key)])


async def chat_service(request: Request) -> ChatService:
    return services_of(request).chat


async def _chat(request: Request, wire: Wire, service: ChatService) -> Response:
    body = await read_json_object(request)
    return await service.handle_chat(body, request=request, request_id=request_id(request), wire=wire)


@router.post("/v1/chat/completions", summary="Chat with the agent (OpenAI format)", **openapi.OPENAI_CHAT)
async def openai_chat(request: Request, service: ChatService = Depends(chat_service)) -> Response:
    return await _chat(request, Wire.OPENAI, service)


@router.post("/chat", summary="Chat with the agent (OpenAI format; Ghost's own path)",
             **openapi.OPENAI_CHAT)
async def ghost_chat(request: Request, service: ChatService = Depends(chat_service)) -> Response:
    return await _chat(request, Wire.OPENAI, service)


@router.post("/api/chat", summary="Chat with the agent (Ollama format; SSE if Accept: text/event-stream)",
             **openapi.OLLAMA_CHAT)
async def ollama_chat(request: Request, service: ChatService = Depends(chat_service)) -> Response:
    return await _chat(request, Wire.OLLAMA_CHAT, service)


@router.post("/api/generate", summary="Single-prompt completion (Ollama format, no tools)",
             **openapi.GENERATE)
async def generate(request: Request, service: ChatService = Depends(chat_service)) -> Response:
    body = await read_json_object(request)
    return await service.handle_generate(body, request=request, request_id=request_id(request))
