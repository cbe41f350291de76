"""A started turn's events as an HTTP reply: a stream in the caller's wire format, or one object.

The encoder is chosen by the route's wire format (and `Accept: text/event-stream` on /api/chat).
Streams go out batch by batch; a failure after the start is sent in-band by the encoder and the
stream closes cleanly. A non-streamed reply collects the events, cancelling the turn if the
client hangs up meanwhile, and says in its headers where the time went (`Server-Timing`), where
the turn is stored (`X-Ghost-Session`) and what went wrong on the side (`X-Ghost-Warning`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from enum import Enum
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from ghost.agent.service import StartedTurn, TurnEvents
from ghost.api.disconnect import unless_disconnected
from ghost.api.encoders.common import CollectedTurn, ReplyInfo
from ghost.api.encoders.ollama_ndjson import OllamaStreamEncoder, chat_object, generate_object
from ghost.api.encoders.openai_sse import OpenAIStreamEncoder, completion_object
from ghost.api.session_id import SESSION_HEADER
from ghost.api.streaming import WatchedStreamingResponse
from ghost.errors import GhostError
from ghost.events import Error, Event

log = logging.getLogger("ghost.chat")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
CLIENT_CLOSED = 499  # nginx's status for a client that hung up before the reply: logged, never sent


class Wire(Enum):
    OPENAI = "openai"  # /v1/chat/completions, /chat
    OLLAMA_CHAT = "ollama_chat"  # /api/chat
    OLLAMA_GENERATE = "ollama_generate"  # /api/generate


async def reply(request: Request, turn: StartedTurn, info: ReplyInfo, wire: Wire, *, stream: bool) -> Response:
    session = {SESSION_HEADER: turn.session_id} if turn.session_id else {}
    if stream:
        return _streamed(turn.events, info, _encoder(request, info, wire), session)
    return await _collected(request, turn.events, info, wire, session)


def _encoder(request: Request, info: ReplyInfo, wire: Wire) -> OpenAIStreamEncoder | OllamaStreamEncoder:
    if wire is Wire.OPENAI or (wire is Wire.OLLAMA_CHAT and "text/event-stream" in request.headers.get("accept", "")):
        return OpenAIStreamEncoder(info)
    return OllamaStreamEncoder(info, "generate" if wire is Wire.OLLAMA_GENERATE else "chat")


def _streamed(events: TurnEvents, info: ReplyInfo, encoder: OpenAIStreamEncoder | OllamaStreamEncoder,
              session: dict[str, str]) -> Response:
    media = "text/event-stream" if isinstance(encoder, OpenAIStreamEncoder) else "application/x-ndjson"
    return stream_response(events, encoder.encode, media, info, session)


def stream_response(events: TurnEvents, encode: Callable[[Event], bytes], media_type: str, info: ReplyInfo,
                    session: dict[str, str]) -> Response:
    """A started turn streamed through any protocol's encoder (a failure after the start in-band)."""
    return WatchedStreamingResponse(_encoded(events, encode, info.request_id), media_type=media_type,
                                    headers={**SSE_HEADERS, **session})


async def _collected(request: Request, events: TurnEvents, info: ReplyInfo, wire: Wire,
                     session: dict[str, str]) -> Response:
    return await collected_response(request, events, info, session, lambda turn: _single_object(wire, turn, info))


async def collected_response(request: Request, events: TurnEvents, info: ReplyInfo, session: dict[str, str],
                             body_of: Callable[[CollectedTurn], dict[str, Any]],
                             observe: Callable[[Event], None] | None = None) -> Response:
    """A started turn as one JSON object made by `body_of` (`observe` sees every event on the way)."""
    turn = await unless_disconnected(request.receive, _collect(events, info.show_activity, observe))
    if turn is None:
        return Response(status_code=CLIENT_CLOSED)
    if turn.stats is not None:
        request.scope["ghost.upstream_ms"] = round(turn.stats.upstream_seconds * 1000, 2)
    headers = {"Server-Timing": turn.server_timing(time.perf_counter() - info.started), **session}
    if turn.notices:
        headers["X-Ghost-Warning"] = "; ".join(turn.notices)
    return JSONResponse(body_of(turn), headers=headers)


async def _encoded(batches: TurnEvents, encode: Callable[[Event], bytes], request_id: str) -> AsyncIterator[bytes]:
    try:
        async for batch in batches:
            if data := b"".join(map(encode, batch)):
                yield data
    except GhostError as exc:
        log.warning("turn %s failed mid-stream: %s", request_id, exc.message)
        yield encode(Error(exc.message, exc.error_type))
    except Exception:
        log.exception("turn %s crashed mid-stream", request_id)
        yield encode(Error(f"internal error (request {request_id})", "internal_error"))
    finally:
        await batches.aclose()


async def _collect(batches: TurnEvents, show_activity: bool,
                   observe: Callable[[Event], None] | None = None) -> CollectedTurn:
    turn = CollectedTurn()
    try:
        async for batch in batches:
            for event in batch:
                turn.add(event, show_activity)
                if observe is not None:
                    observe(event)
    finally:
        await batches.aclose()
    return turn


def _single_object(wire: Wire, turn: CollectedTurn, info: ReplyInfo) -> dict[str, Any]:
    if wire is Wire.OPENAI:
        return completion_object(turn, info)
    if wire is Wire.OLLAMA_GENERATE:
        return generate_object(turn, info)
    return chat_object(turn, info)
