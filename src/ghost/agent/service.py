"""The chat service: one agent turn behind every chat route, encoded for the caller's wire format.

Routes hand over a parsed body; this module runs the turn (bounded by the turn limiter), stores
the finished conversation, and picks the encoder. Errors before the first event become an HTTP
status; after it they are sent in-band by the encoder, and the stream closes cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from enum import Enum
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from ghost.agent.catalog import ModelChoice, listed_models, resolve_model
from ghost.agent.continuation import session_for
from ghost.agent.encoders.common import CollectedTurn, ReplyInfo
from ghost.agent.encoders.ollama_ndjson import OllamaStreamEncoder, chat_object, generate_object
from ghost.agent.encoders.openai_sse import OpenAIStreamEncoder, completion_object
from ghost.events import ClientToolCall, Done, Error, Event, Notice, TextDelta
from ghost.agent.limits import TurnLimiter
from ghost.agent.pump import pumped
from ghost.agent.request import ChatRequest, parse_chat_request
from ghost.agent.turn import AgentTurn, TurnOptions, TurnServices
from ghost.api.streaming import WatchedStreamingResponse
from ghost.errors import GhostError, InsufficientStorage, NotFound, Unprocessable, echo
from ghost.config import Settings
from ghost.llm.upstream import Upstream
from ghost.store.history import History
from ghost.workspace.gate import WorkspaceGate

log = logging.getLogger("ghost.agent")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SESSION_HEADER = "X-Ghost-Session"  # on a reply: the session the turn is stored under
# The plain variant of a model: one upstream call, nothing of the agent's added, nothing stored.
PLAIN = TurnOptions(max_tool_rounds=0, use_tools=False, system_prompt=False, session_summary=False)


class Wire(Enum):
    OPENAI = "openai"  # /v1/chat/completions, /chat
    OLLAMA_CHAT = "ollama_chat"  # /api/chat
    OLLAMA_GENERATE = "ollama_generate"  # /api/generate


class ChatService:
    def __init__(self, settings: Settings, upstream: Upstream, turns: TurnServices, history: History,
                 gate: WorkspaceGate) -> None:
        self.settings, self.upstream, self.turns = settings, upstream, turns
        self.history, self.gate = history, gate
        self.limiter = TurnLimiter(settings.max_concurrent_turns, settings.turn_queue_timeout)
        self.in_flight_turns = 0

    # --- entry points ------------------------------------------------------------------------
    async def handle_chat(self, body: dict[str, Any], *, request: Request, request_id: str, wire: Wire) -> Response:
        chat = parse_chat_request(body, default_stream=wire is not Wire.OPENAI,
                                  default_model=self.upstream.models[0],
                                  session_header=request.headers.get("x-ghost-session"))
        sse = wire is Wire.OPENAI or "text/event-stream" in request.headers.get("accept", "")
        if self._model(chat.model).plain:
            return await self._respond(chat, PLAIN, request, request_id, wire, sse)
        chat.session_id = await session_for(self.history, chat.messages, chat.session_id)
        options = TurnOptions(max_tool_rounds=self.settings.max_tool_rounds)
        return await self._respond(chat, options, request, request_id, wire, sse, record=chat.session_id is not None)

    async def handle_generate(self, body: dict[str, Any], *, request: Request, request_id: str) -> Response:
        chat = parse_chat_request({**body, "messages": generate_messages(body)}, default_stream=True,
                                  default_model=self.upstream.models[0])
        chat.client_tools = []
        return await self._respond(chat, PLAIN, request, request_id, Wire.OLLAMA_GENERATE, False)

    # --- the turn ------------------------------------------------------------------------------
    async def _respond(self, chat: ChatRequest, options: TurnOptions, request: Request, request_id: str,
                       wire: Wire, sse: bool, *, record: bool = False) -> Response:
        info = ReplyInfo(request_id=request_id, model=chat.model, include_usage=chat.include_usage,
                         show_activity=self.settings.tool_activity != "none")
        upstream_chat = self._for_upstream(chat)
        events = pumped(self._guarded(upstream_chat, chat, options, request_id, record),
                        self.settings.keepalive_seconds)
        session = {SESSION_HEADER: chat.session_id} if record and chat.session_id else {}
        try:
            first = await anext(events)
        except BaseException:
            await events.aclose()
            raise
        if chat.stream:
            encoder = OpenAIStreamEncoder(info) if sse else OllamaStreamEncoder(
                info, "generate" if wire is Wire.OLLAMA_GENERATE else "chat")
            media = "text/event-stream" if sse else "application/x-ndjson"
            return WatchedStreamingResponse(_encoded(first, events, encoder.encode, request_id),
                                            media_type=media, headers={**SSE_HEADERS, **session})
        turn = await _cancel_on_disconnect(request, _collect(first, events, info.show_activity))
        if turn is None:
            return Response(status_code=499)
        total = time.perf_counter() - info.started
        if turn.stats is not None:
            request.scope["ghost.upstream_ms"] = round(turn.stats.upstream_seconds * 1000, 2)
        headers = {"Server-Timing": turn.server_timing(total), **session}
        if turn.notices:
            headers["X-Ghost-Warning"] = "; ".join(turn.notices)
        return JSONResponse(_single_object(wire, turn, info), headers=headers)

    def _model(self, asked: str) -> ModelChoice:
        choice = resolve_model(asked, self.upstream.models)
        if choice is None:
            served = ", ".join(c.listed_name for c in listed_models(self.upstream.models))
            raise NotFound(f"model '{echo(asked)}' not found; this server serves: {served}")
        return choice

    def _for_upstream(self, chat: ChatRequest) -> ChatRequest:
        """The request as the upstream gets it: the model under the name the upstream knows."""
        return dataclasses.replace(chat, model=self.upstream.upstream_model(self._model(chat.model).name))

    async def _guarded(self, upstream_chat: ChatRequest, chat: ChatRequest, options: TurnOptions,
                       request_id: str, record: bool) -> AsyncIterator[Event]:
        async with self.limiter.slot(), self.gate.turn():
            self.in_flight_turns += 1
            try:
                turn = AgentTurn(self.turns, upstream_chat, request_id, options)
                async for event in _recording(turn.run(), chat, self.history if record else None):
                    yield event
            finally:
                self.in_flight_turns -= 1


def generate_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    prompt = body.get("prompt", "")
    if not isinstance(prompt, str):
        raise Unprocessable("prompt: must be a string")
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        raise Unprocessable("system: must be a string")
    user: dict[str, Any] = {"role": "user", "content": prompt}
    if body.get("images"):
        user["images"] = body["images"]
    return ([{"role": "system", "content": system}] if system else []) + [user]


async def _recording(events: AsyncIterator[Event], chat: ChatRequest, history: History | None) -> AsyncIterator[Event]:
    """Pass events through; when the turn finishes, store the conversation before saying Done."""
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    async for event in events:
        if isinstance(event, TextDelta):
            text.append(event.text)
        elif isinstance(event, ClientToolCall):
            calls += [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                      for c in event.calls]
        elif isinstance(event, Done) and history is not None and chat.session_id is not None:
            reply: dict[str, Any] = {"role": "assistant", "content": "".join(text)}
            if calls:
                reply["tool_calls"] = calls
            if notice := await _saved_or_notice(history, chat.session_id, [*chat.messages, reply]):
                yield notice
        yield event


async def _saved_or_notice(history: History, session_id: str, messages: list[dict[str, Any]]) -> Notice | None:
    """Store the conversation; if the disk is full, say so instead of losing the reply with it."""
    try:
        await history.save(session_id, messages)
    except InsufficientStorage as exc:
        log.warning("the reply of session %s was delivered but not saved to the history: %s",
                    session_id, exc.message)
        return Notice(f"this reply was not saved to the chat history: {exc.message}")
    return None


async def _encoded(first: list[Event], batches: AsyncIterator[list[Event]], encode: Callable[[Event], bytes],
                   request_id: str) -> AsyncIterator[bytes]:
    try:
        if data := b"".join(map(encode, first)):
            yield data
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


async def _collect(first: list[Event], batches: AsyncIterator[list[Event]], show_activity: bool) -> CollectedTurn:
    turn = CollectedTurn()
    try:
        for event in first:
            turn.add(event, show_activity)
        async for batch in batches:
            for event in batch:
                turn.add(event, show_activity)
    finally:
        await batches.aclose()
    return turn


async def _cancel_on_disconnect(request: Request, work: Awaitable[CollectedTurn]) -> CollectedTurn | None:
    """Run `work`; if the client hangs up first, cancel it (stopping the upstream and any tool)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return None
    return task.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _single_object(wire: Wire, turn: CollectedTurn, info: ReplyInfo) -> dict[str, Any]:
    if wire is Wire.OPENAI:
        return completion_object(turn, info)
    if wire is Wire.OLLAMA_GENERATE:
        return generate_object(turn, info)
    return chat_object(turn, info)
