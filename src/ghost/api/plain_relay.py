"""A `-plain` model on OpenAI's wire: the upstream's reply relayed as it sent it.

Every choice (`n` > 1), `logprobs`, and fields only that server sends reach the client; Ghost puts
back only its own identity — the model name the client asked for and the completion id
`chatcmpl-<request id>` — so the reply names what the client called. Bounds, timeouts and the
error shape are the chat path's (`ghost.llm.relay`): an error before the first chunk is an HTTP
status, after it an in-band `error` event, then `[DONE]`.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from ghost.agent.request import ChatRequest
from ghost.agent.service import ChatService
from ghost.api.chat_reply import CLIENT_CLOSED, stream_response
from ghost.api.deps import request_id
from ghost.api.disconnect import unless_disconnected
from ghost.api.encoders.common import ReplyInfo, dumps
from ghost.api.encoders.openai_sse import DONE_LINE, KEEPALIVE, sse_error
from ghost.events import Error, Heartbeat
from ghost.llm.relay import RelayEnd


async def relayed(request: Request, chat: ChatRequest, service: ChatService) -> Response:
    rid = request_id(request)
    if chat.stream:
        turn = await service.relay_stream(chat, rid)
        info = ReplyInfo(request_id=rid, model=turn.model)
        return stream_response(turn.events, _encoder(info), "text/event-stream", info, {})
    reply = await unless_disconnected(request.receive, service.relay_reply(chat, rid))
    if reply is None:
        return Response(status_code=CLIENT_CLOSED)
    return JSONResponse(ghost_named(reply, ReplyInfo(request_id=rid, model=chat.model)))


def ghost_named(reply: dict[str, Any], info: ReplyInfo) -> dict[str, Any]:
    """The upstream's reply (or chunk) under Ghost's model name and completion id."""
    return {**reply, "id": info.completion_id, "model": info.model}


def _encoder(info: ReplyInfo) -> Any:
    def encode(item: object) -> bytes:
        if isinstance(item, Heartbeat):
            return KEEPALIVE
        if isinstance(item, Error):
            return sse_error(item.message, item.type)
        if isinstance(item, RelayEnd):
            return DONE_LINE
        if not isinstance(item, dict):
            return b""
        return b"data: " + dumps(ghost_named(item, info)).encode() + b"\n\n"
    return encode
