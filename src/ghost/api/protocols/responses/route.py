"""`POST /v1/responses`, `GET /v1/responses/{id}`, `DELETE /v1/responses/{id}`: thin handlers.

A request is parsed (`request`), put behind the stored conversation it continues
(`previous_response_id`), run by the one chat service, and answered by the one builder
(`encoder`): as typed SSE events, or as the response object. A stored response (`store`, on
by default) is saved before the closing event goes out, so its id can be continued at once.
Errors before the turn's first event are HTTP statuses in OpenAI's error shape (Ghost's own);
after it, they travel in-band as the protocol's `error` and `response.failed` events.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from ghost.agent.service import ChatService, StartedTurn
from ghost.api.auth import require_key
from ghost.api.chat_reply import CLIENT_CLOSED, SSE_HEADERS
from ghost.api.deps import read_json_object_or_400, request_id
from ghost.api.disconnect import unless_disconnected
from ghost.api.protocols.responses import openapi as docs
from ghost.api.protocols.responses.encoder import KEEPALIVE, ResponseBuilder, new_id, sse
from ghost.api.protocols.responses.request import ResponsesRequest, parsed_body, responses_request, with_history
from ghost.api.caller import get_chat, get_workspace
from ghost.api.services import services_of, settings_of
from ghost.workspace.service import Workspace
from ghost.api.session_id import SESSION_HEADER
from ghost.api.streaming import WatchedStreamingResponse
from ghost.errors import GhostError, InsufficientStorage, NotFound, echo
from ghost.events import Error, Heartbeat, Notice
from ghost.store.responses import ResponseStore

log = logging.getLogger("ghost.responses")
router = APIRouter(dependencies=[Depends(require_key)])


async def response_store(request: Request, workspace: Workspace = Depends(get_workspace)) -> ResponseStore:
    """The caller's stored responses: another workspace's ids are not found."""
    return ResponseStore(workspace.db, workspace.name, max_stored=settings_of(request).responses_max_stored)


@router.post("/v1/responses", summary="Run the agent (OpenAI Responses API; typed SSE events if stream)",
             **docs.CREATE)
async def create_response(request: Request, service: ChatService = Depends(get_chat),
                          store: ResponseStore = Depends(response_store)) -> Response:
    asked = responses_request(parsed_body(await read_json_object_or_400(request)))
    await _continue(asked, store)
    turn = await service.run(asked.chat, request_id(request))
    builder = ResponseBuilder(new_id("resp"), turn.model, int(time.time()), asked.echo,
                              show_activity=settings_of(request).tool_activity != "none")
    session = {SESSION_HEADER: turn.session_id} if turn.session_id else {}
    if asked.chat.stream:
        return WatchedStreamingResponse(_streamed(turn, builder, asked, store, request_id(request)),
                                        media_type="text/event-stream", headers={**SSE_HEADERS, **session})
    builder.start()
    notices = await unless_disconnected(request.receive, _collected(turn, builder, asked, store))
    if notices is None:
        return Response(status_code=CLIENT_CLOSED)
    headers = {**session, **({"X-Ghost-Warning": "; ".join(notices)} if notices else {})}
    return JSONResponse(builder.response, headers=headers)


@router.get("/v1/responses/{response_id}", summary="A stored response (OpenAI Responses API)", **docs.GET)
async def get_response(response_id: str, store: ResponseStore = Depends(response_store)) -> dict[str, Any]:
    stored = await store.get(response_id)
    if stored is None:
        raise NotFound(f"no stored response '{echo(response_id)}'")
    return stored.body


@router.delete("/v1/responses/{response_id}", summary="Delete a stored response (OpenAI Responses API)",
               **docs.DELETE)
async def delete_response(response_id: str, store: ResponseStore = Depends(response_store)) -> dict[str, Any]:
    if not await store.delete(response_id):
        raise NotFound(f"no stored response '{echo(response_id)}'")
    return {"id": response_id, "object": "response.deleted", "deleted": True}


async def _continue(asked: ResponsesRequest, store: ResponseStore) -> None:
    """Put the conversation `previous_response_id` names in front of this request's input."""
    if asked.previous_response_id is None:
        with_history(asked, [], None)
        return
    previous = await store.get(asked.previous_response_id)
    if previous is None:
        raise NotFound(f"previous_response_id: no stored response '{echo(asked.previous_response_id)}'")
    with_history(asked, previous.messages, previous.session_id)


async def _collected(turn: StartedTurn, builder: ResponseBuilder, asked: ResponsesRequest,
                     store: ResponseStore) -> list[str]:
    notices: list[str] = []
    try:
        async for batch in turn.events:
            for event in batch:
                if isinstance(event, Notice):
                    notices.append(event.text)
                builder.feed(event)
    finally:
        await turn.events.aclose()
    if note := await _stored(builder, asked, store, turn.session_id):
        notices.append(note)
    return notices


async def _streamed(turn: StartedTurn, builder: ResponseBuilder, asked: ResponsesRequest,
                    store: ResponseStore, rid: str) -> AsyncIterator[bytes]:
    try:
        yield b"".join(map(sse, builder.start()))
        async for batch in turn.events:
            out = bytearray()
            for event in batch:
                if isinstance(event, Heartbeat):
                    out += KEEPALIVE
                elif isinstance(event, Notice):  # a comment line: seen by curl and logs, ignored by clients
                    out += f": ghost warning: {event.text}\n\n".encode()
                else:
                    out += b"".join(map(sse, builder.feed(event)))
            if out:
                yield bytes(out)
        if builder.finished:
            if note := await _stored(builder, asked, store, turn.session_id):
                yield f": ghost warning: {note}\n\n".encode()
            yield sse(builder.final())
    except GhostError as exc:
        log.warning("response %s failed mid-stream: %s", rid, exc.message)
        yield b"".join(map(sse, builder.fail(Error(exc.message, exc.error_type))))
    except Exception:
        log.exception("response %s crashed mid-stream", rid)
        yield b"".join(map(sse, builder.fail(Error(f"internal error (request {rid})", "internal_error"))))
    finally:
        await turn.events.aclose()


async def _stored(builder: ResponseBuilder, asked: ResponsesRequest, store: ResponseStore,
                  session_id: str | None) -> str | None:
    """Store a finished response (unless `store: false`); a note if the disk was full."""
    if not (asked.store and builder.finished):
        return None
    conversation = [*asked.chat.messages[1 if asked.instructions else 0:], builder.reply_message()]
    try:
        await store.save(builder.response["id"], session_id, builder.response, conversation)
    except InsufficientStorage as exc:
        log.warning("response %s was delivered but not stored: %s", builder.response["id"], exc.message)
        return f"this response was not stored: {exc.message}"
    return None
