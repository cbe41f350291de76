"""`POST /v1/messages` and `POST /v1/messages/count_tokens`: thin handlers over the one chat service.

A turn runs exactly as on the other chat routes (`ChatService.run`); only the wire differs. An error
before the turn's first event is an HTTP status (reshaped into Anthropic's error object by
`ghost.api.error_shape`); after it, an `error` event in the stream. `anthropic-version` and
`anthropic-beta` headers are accepted: the one version of the API this adapter speaks is the
one every version since 2023-06-01 shares.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from ghost.agent.service import ChatService
from ghost.api import openapi
from ghost.api.auth import require_key
from ghost.api.chat_reply import collected_response, stream_response
from ghost.api.deps import read_json_object_or_400, request_id
from ghost.api.encoders.common import ReplyInfo
from ghost.api.protocols.anthropic import request as anthropic_request
from ghost.api.protocols.anthropic.paths import COUNT_TOKENS_PATH, MESSAGES_PATH
from ghost.api.protocols.anthropic.encoder import AnthropicStreamEncoder, MessageEvents, MessageFolder
from ghost.api.caller import get_chat
from ghost.api.services import services_of, settings_of
from ghost.api.session_id import SESSION_HEADER
from ghost.events import Event

router = APIRouter(dependencies=[Depends(require_key)])


@router.post(MESSAGES_PATH, summary="Chat with the agent (Anthropic Messages API)", **openapi.ANTHROPIC_MESSAGES)
async def messages(request: Request, service: ChatService = Depends(get_chat)) -> Response:
    body = anthropic_request.parse(anthropic_request.MessagesRequest, await read_json_object_or_400(request))
    chat = anthropic_request.chat_request(body, session_header=request.headers.get(SESSION_HEADER))
    started, created = time.perf_counter(), int(time.time())
    turn = await service.run(chat, request_id(request))
    info = ReplyInfo(request_id=request_id(request), model=turn.model,
                     show_activity=settings_of(request).tool_activity != "none",
                     created=created, started=started)
    session = {SESSION_HEADER: turn.session_id} if turn.session_id else {}
    thinking = body.thinking is None or body.thinking.type != "disabled"
    if chat.stream:
        encoder = AnthropicStreamEncoder(info, thinking=thinking)
        return stream_response(turn.events, encoder.encode, encoder.media_type, info, session)
    state, folder = MessageEvents(info, thinking=thinking), MessageFolder()

    def observe(event: Event) -> None:
        for item in state.events(event):
            folder.apply(item)

    return await collected_response(request, turn.events, info, session, lambda _: folder.message, observe)


@router.post(COUNT_TOKENS_PATH, summary="Count a Messages request's input tokens as Ghost would send it",
             **openapi.ANTHROPIC_COUNT_TOKENS)
async def count_tokens(request: Request, service: ChatService = Depends(get_chat)) -> Response:
    body = anthropic_request.parse(anthropic_request.CountTokensRequest, await read_json_object_or_400(request))
    tokens = await service.count_tokens(anthropic_request.count_request(body), request_id(request))
    return JSONResponse({"input_tokens": tokens})
