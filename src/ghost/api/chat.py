"""Chat routes: thin handlers over the one chat service.

Each reads the body (size and nesting bounded), validates it with the models of `bodies`, turns
it into the agent's request (`openai_request`), starts the turn and hands it to `chat_reply`.
An error before the turn's first event is an HTTP status; after it, it travels in-band.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from ghost.agent.request import ChatRequest
from ghost.agent.service import ChatService
from ghost.api import bodies, chat_params, openapi
from ghost.api.auth import require_key
from ghost.api.chat_reply import Wire, reply
from ghost.api.deps import read_json_object, request_id
from ghost.api.encoders.common import ReplyInfo
from ghost.api.openai_request import chat_request, generate_request, parsed_chat
from ghost.api.plain_relay import relayed
from ghost.api.caller import get_chat, known_caller
from ghost.api.services import services_of, settings_of
from ghost.api.session_id import SESSION_HEADER
from ghost.errors import BadRequest

router = APIRouter(dependencies=[Depends(require_key)])


async def _chat(request: Request, wire: Wire, service: ChatService) -> Response:
    payload = await read_json_object(request)
    workspace = service.history.workspace
    body, known = parsed_chat(payload, workspace)  # messages validated on an earlier turn are not again
    # A front end acting for its end user names the session by its own chat id (X-OpenWebUI-Chat-Id).
    chat = chat_request(body, payload, default_stream=wire is not Wire.OPENAI,
                        session_header=request.headers.get(SESSION_HEADER) or known_caller(request).session,
                        known=known, workspace=workspace)
    if service.is_plain(chat.model):
        if wire is Wire.OPENAI:  # the upstream's reply as it is: every choice, logprobs
            return await relayed(request, chat, service)
        if (refusal := chat_params.ollama_relay_refusal(payload)) is not None:
            raise BadRequest(refusal)
    return await _run(request, chat, wire, service)


async def _run(request: Request, chat: ChatRequest, wire: Wire, service: ChatService, *,
               plain: bool = False) -> Response:
    started, created = time.perf_counter(), int(time.time())  # the reply's clock starts before the turn
    turn = await service.run(chat, request_id(request), plain=plain)
    info = ReplyInfo(request_id=request_id(request), model=turn.model, include_usage=chat.include_usage,
                     show_activity=settings_of(request).tool_activity != "none",
                     created=created, started=started)
    return await reply(request, turn, info, wire, stream=chat.stream)


@router.post("/v1/chat/completions", summary="Chat with the agent (OpenAI format)", **openapi.OPENAI_CHAT)
async def openai_chat(request: Request, service: ChatService = Depends(get_chat)) -> Response:
    return await _chat(request, Wire.OPENAI, service)


@router.post("/chat", summary="Chat with the agent (OpenAI format; Ghost's own path)",
             **openapi.OPENAI_CHAT)
async def ghost_chat(request: Request, service: ChatService = Depends(get_chat)) -> Response:
    return await _chat(request, Wire.OPENAI, service)


@router.post("/api/chat", summary="Chat with the agent (Ollama format; SSE if Accept: text/event-stream)",
             **openapi.OLLAMA_CHAT)
async def ollama_chat(request: Request, service: ChatService = Depends(get_chat)) -> Response:
    return await _chat(request, Wire.OLLAMA_CHAT, service)


@router.post("/api/generate", summary="Single-prompt completion (Ollama format, no tools)",
             **openapi.GENERATE)
async def generate(request: Request, service: ChatService = Depends(get_chat)) -> Response:
    payload = await read_json_object(request)
    chat = generate_request(bodies.parsed(bodies.GenerateRequest, payload), payload)
    return await _run(request, chat, Wire.OLLAMA_GENERATE, service, plain=True)
