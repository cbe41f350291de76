"""The chat service: one agent turn behind every chat route, as a stream of events.

It resolves the model, decides the session the turn is stored under (see `continuation`), runs
the turn under the turn limiter and the workspace gate, and stores the finished conversation.
It knows nothing of HTTP: the routes in `ghost.api.chat` pick the wire format, stream or collect
the events, and watch for the client hanging up.

`run` returns once the turn's first events are in. An error before that is raised (the route
answers it with an HTTP status); after it, errors come out of the event stream, where the route
sends them in-band.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from ghost.agent.catalog import ModelChoice, listed_models, resolve_model
from ghost.agent.continuation import NOWHERE, Placement, session_for
from ghost.agent.limits import TurnLimiter
from ghost.agent.pump import pumped
from ghost.agent.request import ChatRequest
from ghost.agent.user_limits import UserLimits
from ghost.agent.turn import AgentTurn, TurnOptions, TurnServices
from ghost.errors import BadRequest, InsufficientStorage, NotFound, echo
from ghost.events import ClientToolCall, Done, Event, Notice, TextDelta
from ghost.config import Settings
from ghost.llm.upstream import Upstream
from ghost.observe.turns import TurnObserver
from ghost.store.history import History
from ghost.workspace.gate import WorkspaceGate

log = logging.getLogger("ghost.agent")
# The plain variant of a model: one upstream call, nothing of the agent's added, nothing stored.
PLAIN = TurnOptions(max_tool_rounds=0, use_tools=False, system_prompt=False, session_summary=False)


class TurnEvents:
    """A started turn's events in batches: the first batch already in, the rest as they come.

    `aclose()` stops the turn (the upstream request, any running tool) whether or not iteration began.
    """

    def __init__(self, first: list[Event], rest: AsyncIterator[list[Event]]) -> None:
        self._first: list[Event] | None = first
        self._rest = rest

    def __aiter__(self) -> TurnEvents:
        return self

    async def __anext__(self) -> list[Event]:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return await anext(self._rest)

    async def aclose(self) -> None:
        await self._rest.aclose()


@dataclass
class StartedTurn:
    model: str  # the model the reply names: as the client asked, or the default one
    session_id: str | None  # the session the turn is stored under; None: stored nowhere
    events: TurnEvents


class ChatService:
    def __init__(self, settings: Settings, upstream: Upstream, turns: TurnServices, history: History,
                 gate: WorkspaceGate, *, limiter: TurnLimiter | None = None, user_limits: UserLimits | None = None,
                 on_turn: Callable[[], Awaitable[None]] | None = None, observer: TurnObserver | None = None) -> None:
        self.settings, self.upstream, self.turns = settings, upstream, turns
        self.history, self.gate = history, gate
        # `limiter`: the server-wide bound, shared by every user's chat service; `user_limits`:
        # this user's own (checked first, answered at once); `on_turn`: counts an admitted turn.
        self.limiter = limiter or TurnLimiter(settings.max_concurrent_turns, settings.turn_queue_timeout)
        self.user_limits, self.on_turn = user_limits, on_turn
        self.observer = observer  # metrics and the turn's span, from its events (ghost.observe)
        self.in_flight_turns = 0

    async def run(self, chat: ChatRequest, request_id: str, *, plain: bool = False) -> StartedTurn:
        """Start one turn; `plain`: one upstream call without the agent, whatever model is asked."""
        model = chat.model or self.upstream.models[0]
        choice = self._model(model)
        if plain or choice.plain:
            if chat.relay is not None:
                chat = dataclasses.replace(chat, sampling=chat.relay)
            return await self._start(model, None, self._turn(chat, choice, PLAIN, request_id, NOWHERE))
        if chat.refused is not None:
            raise BadRequest(chat.refused)
        if self.user_limits is not None:
            await self.user_limits.check_disk()
        place = await session_for(self.history, chat.messages, chat.session_id) if chat.store else NOWHERE
        chat = dataclasses.replace(chat, session_id=place.session_id)
        options = TurnOptions(max_tool_rounds=self.settings.max_tool_rounds)
        return await self._start(model, place.session_id, self._turn(chat, choice, options, request_id, place))

    def is_plain(self, asked: str) -> bool:
        """Whether `asked` names a `-plain` model (an unknown name is the 404 `run` would answer)."""
        return self._model(asked or self.upstream.models[0]).plain

    async def relay_stream(self, chat: ChatRequest, request_id: str) -> StartedTurn:
        """A `-plain` model's reply streamed as the upstream sends it, every choice and field of each
        chunk kept (`ghost.llm.relay`); started as a turn is, so a failure before the first chunk raises.
        Its "events" are the upstream's chunks, `RelayEnd` and `Heartbeat`s: OpenAI's wire only."""
        model, payload = self._relay_payload(chat)
        return await self._start(model, None, self._relaying(self.upstream.relay_stream(payload, request_id)))

    async def relay_reply(self, chat: ChatRequest, request_id: str) -> dict[str, Any]:
        """A `-plain` model's non-streamed reply, whole as the upstream sent it."""
        _, payload = self._relay_payload(chat)
        async with self._relay_slot():
            return await self.upstream.relay_reply(payload, request_id)

    def _relay_payload(self, chat: ChatRequest) -> tuple[str, dict[str, Any]]:
        """The name the reply goes under, and the body the upstream gets: the client's, but for its
        model's upstream name (no system prompt, no tools of Ghost's, no context fitting)."""
        model = chat.model or self.upstream.models[0]
        payload: dict[str, Any] = {"model": self.upstream.upstream_model(self._model(model).name),
                                   "messages": chat.messages, **(chat.sampling if chat.relay is None else chat.relay)}
        if chat.client_tools:
            payload["tools"] = chat.client_tools
        if chat.tool_choice is not None:
            payload["tool_choice"] = chat.tool_choice
        if chat.stream and chat.include_usage:
            payload["stream_options"] = {"include_usage": True}
        return model, payload

    async def _relaying(self, chunks: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async with self._relay_slot(), aclosing(chunks):
            async for chunk in chunks:
                yield chunk

    @asynccontextmanager
    async def _relay_slot(self) -> AsyncIterator[None]:
        """A relay takes a turn's slots (the user's, the server's) and counts as a turn; it touches no
        workspace, so it does not wait for the workspace gate."""
        async with self._user_slot(), self.limiter.slot():
            if self.on_turn is not None:
                await self.on_turn()
            self.in_flight_turns += 1
            try:
                yield
            finally:
                self.in_flight_turns -= 1

    async def count_tokens(self, chat: ChatRequest, request_id: str) -> int:
        """The prompt tokens `chat` would cost as Ghost sends it: its system prompt and tools included."""
        choice = self._model(chat.model or self.upstream.models[0])
        chat = dataclasses.replace(chat, model=self.upstream.upstream_model(choice.name))
        options = PLAIN if choice.plain else TurnOptions(max_tool_rounds=self.settings.max_tool_rounds)
        async with self.gate.turn():  # the scratchpad and skills the prompt shows stay put meanwhile
            return await AgentTurn(self.turns, chat, request_id, options).prompt_tokens()

    async def _start(self, model: str, session: str | None, turn: AsyncIterator[Event]) -> StartedTurn:
        events = pumped(turn, self.settings.keepalive_seconds)
        try:
            first = await anext(events)
        except BaseException:
            await events.aclose()
            raise
        return StartedTurn(model=model, session_id=session, events=TurnEvents(first, events))

    def _model(self, asked: str) -> ModelChoice:
        choice = resolve_model(asked, self.upstream.models)
        if choice is None:
            served = ", ".join(c.listed_name for c in listed_models(self.upstream.models))
            raise NotFound(f"model '{echo(asked)}' not found; this server serves: {served}")
        return choice

    async def _turn(self, chat: ChatRequest, choice: ModelChoice, options: TurnOptions,
                    request_id: str, store_as: Placement) -> AsyncIterator[Event]:
        # The upstream knows the model by its own name (--upstream-model), else by the served one.
        upstream_chat = dataclasses.replace(chat, model=self.upstream.upstream_model(choice.name))
        async with self._user_slot(), self.limiter.slot(), self.gate.turn():
            if self.on_turn is not None:
                await self.on_turn()
            self.in_flight_turns += 1
            # Recorded and watched here, in the loop that forwards the events anyway: no generator
            # of their own around a turn's hundreds of events.
            watch = self.observer.watch(choice.name) if self.observer is not None else None
            events = AgentTurn(self.turns, upstream_chat, request_id, options).run()
            try:
                recorder = _Recorder(chat.messages, self.history, store_as)
                async for event in events:
                    if watch is not None:
                        watch.see(event)
                    if (notice := await recorder.see(event)) is not None:
                        yield notice
                    yield event
            except BaseException as exc:
                if watch is not None:
                    watch.failed(exc)
                raise
            finally:
                try:
                    await events.aclose()  # left at a `yield` when the consumer stopped: its cleanup now
                finally:
                    self.in_flight_turns -= 1
                    if self.user_limits is not None:  # the turn's tools may have written files
                        self.user_limits.forget_usage()
                    if watch is not None:
                        watch.end()

    def _user_slot(self) -> AbstractAsyncContextManager[None]:
        return self.user_limits.turn() if self.user_limits is not None else nullcontext()


class _Recorder:
    """Sees a turn's events; when the turn finishes (its `Done`), stores the conversation, the
    reply included, before the `Done` goes out (a `Notice` to send first if it could not)."""

    def __init__(self, messages: list[dict[str, Any]], history: History, place: Placement) -> None:
        self.messages, self.history, self.place = messages, history, place
        self.text: list[str] = []
        self.calls: list[dict[str, Any]] = []

    async def see(self, event: Event) -> Notice | None:
        if isinstance(event, TextDelta):
            self.text.append(event.text)
        elif isinstance(event, ClientToolCall):
            self.calls += [call.openai_object() for call in event.calls]
        elif isinstance(event, Done) and self.place.session_id is not None:
            reply: dict[str, Any] = {"role": "assistant", "content": "".join(self.text)}
            if self.calls:
                reply["tool_calls"] = self.calls
            return await _saved_or_notice(self.history, self.place.session_id, self.place, [*self.messages, reply])
        return None


async def _saved_or_notice(history: History, session_id: str, place: Placement,
                           messages: list[dict[str, Any]]) -> Notice | None:
    """Store the conversation (its new messages); if the disk is full, say so instead of losing the reply."""
    try:
        # The chain of the client's messages, if finding the session took it, is not hashed again.
        await history.save(session_id, messages, place.seen_writes, place.chained)
    except InsufficientStorage as exc:
        log.warning("the reply of session %s was delivered but not saved to the history: %s",
                    session_id, exc.message)
        return Notice(f"this reply was not saved to the chat history: {exc.message}")
    return None
