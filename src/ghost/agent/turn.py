"""One agent turn: call the upstream, run Ghost's tools while the model asks for them, and yield
events. A short loop with a limit. No client wire formats (the events are encoded by the routes),
no persistence, no HTTP here; the body of each upstream call is OpenAI's, the upstream's language."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from ghost.agent.answer_format import AnswerFormat, without_format
from ghost.agent.budget import OutputBudget, budget_note
from ghost.agent.context import ContextFitter, tools_json
from ghost.agent.context_services import ContextServices
from ghost.agent.tokens import estimate, message_text
from ghost.agent.tool_offer import FIND_TOOLS, ToolChooser
from ghost.agent.client_tools import ClientTools
from ghost.events import (ClientToolCall, Done, Event, ReasoningDelta, TextDelta, ToolActivity,
                                ToolCall, TurnStats, Usage)
from ghost.agent.prompt import PROMPT_MEMORY_CHARS, system_message, with_system_prompt
from ghost.agent.request import ChatRequest
from ghost.config import Settings
from ghost.errors import ContextLengthExceeded
from ghost.llm.chat import Completion
from ghost.llm.upstream import Upstream
from ghost.tools.base import ToolContext, ToolRegistry, ToolResult

ACTIVITY_PREVIEW_CHARS = 120
PROMPT_TOOL_NAMES = 40  # tool names the system prompt lists at most


@dataclass(frozen=True)
class TurnServices:
    """What a turn uses, built once at start and shared by every turn."""

    settings: Settings
    upstream: Upstream
    tools: ToolRegistry | None  # Ghost's own tools, skills and MCP servers
    context: ContextServices | None  # None: calls are sent as they are (the start-up self-test)
    sandbox_network: bool  # told to the model in the system prompt


@dataclass(frozen=True)
class TurnOptions:
    max_tool_rounds: int
    use_tools: bool = True  # False for /api/generate: one plain completion
    system_prompt: bool = True
    session_summary: bool = True  # a summary made to fit the window is shown with the session


def round_limit_message(rounds: int) -> str:
    return (f"\n\n[Ghost stopped this turn: the model was still calling tools after {rounds} rounds "
            f"(limit set by --max-tool-rounds). Ask again, or raise the limit.]")


def sum_usage(total: Usage | None, part: Usage | None, *, first: bool) -> Usage | None:
    """Sum per-call usage; unknown if any call did not report it (never a fake partial count)."""
    if part is None or (total is None and not first):
        return None
    if total is None:
        return part
    return Usage(total.prompt_tokens + part.prompt_tokens, total.completion_tokens + part.completion_tokens)


def _preview(arguments: str) -> str:
    flat = " ".join(arguments.split())
    return flat if len(flat) <= ACTIVITY_PREVIEW_CHARS else flat[:ACTIVITY_PREVIEW_CHARS] + "…"


def _assistant_message(text: str, calls: list[ToolCall]) -> dict[str, Any]:
    return {"role": "assistant", "content": text or None, "tool_calls": [c.openai_object() for c in calls]}


def _chosen_tool(choice: Any) -> tuple[str, ...]:
    """The tool a request's `tool_choice` names (`{"type": "function", "function": {"name": ...}}`)."""
    function = choice.get("function") if isinstance(choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    return (name,) if isinstance(name, str) else ()


def malformed_call_result(call: ToolCall) -> ToolResult:
    """What the model is told about a call it sent malformed (Ghost runs nothing for it)."""
    return ToolResult(json.dumps({"error": f"malformed tool call: {call.problem}; nothing was run. "
                                  "Call a tool by its name with a JSON object of arguments."}),
                      ok=False, summary="malformed call")


@dataclass
class _Reply:
    """What one upstream call answered: its text so far, and how it ended (None: cut short)."""

    text: list[str] = field(default_factory=list)
    completion: Completion | None = None
    started: bool = False  # a chunk came: an overflow now is in-band, too late to retry

    @property
    def calls(self) -> list[ToolCall]:
        return self.completion.tool_calls if self.completion is not None else []


class AgentTurn:
    def __init__(self, services: TurnServices, request: ChatRequest, request_id: str, options: TurnOptions) -> None:
        self.services = services
        self.request = request
        self.request_id = request_id
        self.options = options
        self.round_limit = options.max_tool_rounds
        self.registry: ToolRegistry | None = services.tools if options.use_tools else None
        ghost_names = {s["function"]["name"] for s in self._ghost_schemas()} | {FIND_TOOLS}
        schema_tokens = services.context.schema_tokens if services.context is not None else None
        client = schema_tokens.intern(request.client_tools) if schema_tokens is not None else request.client_tools
        self.client_tools = ClientTools(client, ghost_names)
        self.usage: Usage | None = None
        self.upstream_seconds = 0.0
        self.tool_seconds = 0.0
        self.rounds = 0
        self.budget = OutputBudget(services.settings.max_turn_output_tokens)
        # tool_choice "none": no call can come, so the one call may carry the format at once
        self.format = AnswerFormat(request.sampling, agent=options.use_tools and request.tool_choice != "none")
        self.drafting = False  # this round runs tools without the format (see ghost.agent.answer_format)
        self.calls = 0  # upstream calls made, summaries included
        self.chooser = ToolChooser(schema_tokens, _chosen_tool(self.client_tools.tool_choice_for_model(
            request.tool_choice))) if schema_tokens is not None else None
        self.context = ContextFitter(services.upstream, services.context, model=request.model,
                                     request_id=request_id, chooser=self.chooser,
                                     session_id=request.session_id if options.session_summary else None,
                                     window_cap=request.context_window) \
            if services.context is not None else None

    async def run(self) -> AsyncIterator[Event]:
        messages = await self._opening_messages()
        for round_index in range(self.round_limit + 2):  # the last only for a format's answering call
            reply = _Reply()
            async for event in self._upstream_round(messages, reply):
                yield event
            self.rounds = round_index + 1
            if (ending := self._round_ending(reply, round_index)) is not None:
                for event in ending:
                    yield event
                return
            if reply.calls:
                messages.append(_assistant_message("".join(reply.text), reply.calls))
                async for event in self._run_tools(reply.calls, messages):
                    yield event
        for event in self._round_limit_ending():
            yield event

    async def _upstream_round(self, messages: list[dict[str, Any]], reply: "_Reply") -> AsyncIterator[Event]:
        """One upstream call, its answer streamed as events until it completes or the output budget
        is spent (`reply` gets what it said). An overflow the upstream reports before answering is
        learned from, and the call fitted harder and made once more."""
        tools = [] if self.format.answering else self._tool_schemas()  # a skill made this turn is callable next round
        self.drafting = self.format.drafting(tools)
        for harder in (False, True):
            async for activity in self._fit(messages, tools, harder):
                yield activity
            try:
                async with aclosing(self.services.upstream.stream_chat(self._fitted_payload(messages, tools),
                                                                       self.request_id)) as items:
                    async for item in items:  # the chunk path: keep it flat (no generator per chunk)
                        if isinstance(item, Completion):
                            reply.completion = item
                            if self.context is not None and item.usage is not None:
                                self.context.learn_usage(item.usage.prompt_tokens)
                            break
                        reply.started = True
                        self.budget.add(item.text)
                        if item.kind == "content":
                            reply.text.append(item.text)
                            yield ReasoningDelta(item.text) if self.drafting else TextDelta(item.text)
                        else:
                            yield ReasoningDelta(item.text)
                        if self.budget.spent:
                            break
                return
            except ContextLengthExceeded as exc:
                self._learn_overflow(exc, final=reply.started or harder)

    async def _fit(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], harder: bool
                   ) -> AsyncIterator[ToolActivity]:
        """Fit the call into the context window when it is known (ghost.agent.context); the events
        say what was compacted, and summaries written for it count in the turn's usage."""
        if self.context is None:
            return
        reply = self.context.reply_tokens(self._payload([], tools))
        async for activity in self.context.fit(messages, tools, reply, harder=harder):
            yield activity
        assert self.context.fitted is not None
        for usage in self.context.fitted.summary_usage:
            self._count_usage(usage)

    def _fitted_payload(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
        """The body of the call: as the fitter fitted it, else as it is."""
        if self.context is None or self.context.fitted is None:
            return self._payload(messages, tools)
        fitted = self.context.fitted
        return {**self.context.chat_extra, **self._payload(fitted.messages, fitted.tools)}

    def _learn_overflow(self, exc: ContextLengthExceeded, *, final: bool) -> None:
        """Raise the overflow unless the call may be fitted harder and made again (then learn from it)."""
        if self.context is None:
            raise exc
        if final:
            raise self.context.final(exc) from exc
        self.context.learn_overflow(exc)

    def _round_ending(self, reply: "_Reply", round_index: int) -> list[Event] | None:
        """The turn's closing events after this round's answer, or None to go on (running its tool
        calls, if any)."""
        completion = reply.completion
        if completion is None:  # stream_chat always ends with one: the budget cut it short
            self.usage = None
            return self._budget_ending()
        self.upstream_seconds += completion.upstream_seconds
        self._count_usage(completion.usage)
        self.budget.end_round(completion)
        if not completion.tool_calls and self.drafting:
            self.format.answer_next()  # the model answers: once more, constrained to the format
            return None
        if not completion.tool_calls:
            return self._ending(Done(completion.finish_reason))
        client_calls = [self.client_tools.for_client(c) for c in completion.tool_calls
                        if self.client_tools.owns(c.name) and not c.problem]
        if client_calls:
            return self._ending(ClientToolCall(tuple(client_calls)), Done("tool_calls"))
        if round_index == self.round_limit:
            return self._round_limit_ending()
        if self.budget.spent:
            return self._budget_ending()
        return None

    def _round_limit_ending(self) -> list[Event]:
        note = TextDelta(round_limit_message(self.round_limit))
        return self._ending(note, Done("stop", stop_reason="max_tool_rounds"))

    async def _run_tools(self, calls: list[ToolCall], messages: list[dict[str, Any]]) -> AsyncIterator[Event]:
        for call in calls:
            async for event in self._run_tool(call, messages):
                yield event

    async def prompt_tokens(self) -> int:
        """The tokens of the turn's first upstream call (system prompt and every tool schema included)."""
        messages, tools = await self._opening_messages(), self._tool_schemas()
        if self.context is None:  # nothing learned about the upstream: the plain estimate
            return sum(estimate(message_text(m)[0]) + message_text(m)[1] for m in messages) + estimate(tools_json(tools))
        return await self.context.prompt_tokens(messages, tools)

    def _budget_ending(self) -> list[Event]:
        note = TextDelta(budget_note(self.budget.limit))
        return self._ending(note, Done("length", stop_reason="max_turn_output_tokens"))

    def _count_usage(self, usage: Usage | None) -> None:
        self.usage = sum_usage(self.usage, usage, first=self.calls == 0)
        self.calls += 1

    def _ending(self, *events: Event) -> list[Event]:
        """The closing events, with the turn's usage just before Done when it is known."""
        usage = [self.usage] if self.usage is not None else []
        stats = TurnStats(self.upstream_seconds, self.tool_seconds, self.rounds)
        return [*events[:-1], *usage, stats, events[-1]]

    async def _opening_messages(self) -> list[dict[str, Any]]:
        messages = self.client_tools.history_for_model(self.request.messages)
        if not self.options.system_prompt:
            return list(messages)
        summary = await self.registry.prompt_summary(PROMPT_MEMORY_CHARS) if self.registry else ""
        names = [s["function"]["name"] for s in self._ghost_schemas()]
        if len(names) > PROMPT_TOOL_NAMES:  # a catalogue of hundreds: the rest are found with find_tools
            names = [*names[:PROMPT_TOOL_NAMES], f"and {len(names) - PROMPT_TOOL_NAMES} more ({FIND_TOOLS} "
                     "searches the ones not offered)"]
        network = self.services.sandbox_network
        return with_system_prompt(system_message(summary, names, network=network), messages)

    def _ghost_schemas(self) -> list[dict[str, Any]]:
        return self.registry.schemas() if self.registry is not None else []

    def _tool_schemas(self) -> list[dict[str, Any]]:
        # Both stay reachable on a name clash: the client's tool is renamed (see ClientTools).
        return self._ghost_schemas() + self.client_tools.schemas

    def _payload(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.request.model, "messages": messages, "stream": True,
                                   "stream_options": {"include_usage": True}, **self.request.sampling}
        if self.drafting:
            payload = without_format(payload)
        if tools:
            payload["tools"] = tools
            if self.request.tool_choice is not None:
                payload["tool_choice"] = self.client_tools.tool_choice_for_model(self.request.tool_choice)
        return payload

    async def _run_tool(self, call: ToolCall, messages: list[dict[str, Any]]) -> AsyncIterator[Event]:
        yield ToolActivity(call.name, "start", f"→ {call.name} {_preview(call.arguments)}")
        started = time.perf_counter()
        result = await self._call(call)
        self.tool_seconds += time.perf_counter() - started
        summary = result.summary or ("done" if result.ok else "failed")
        yield ToolActivity(call.name, "end", f"← {call.name}: {summary}", ok=result.ok)
        messages.append({"role": "tool", "tool_call_id": call.id, "content": result.content})

    async def _call(self, call: ToolCall) -> ToolResult:
        if call.problem:
            return malformed_call_result(call)
        if call.name == FIND_TOOLS and self.chooser is not None and not self.client_tools.owns(call.name):
            content, summary = self.chooser.find(call.arguments_object())
            return ToolResult(content, summary=summary)
        if self.registry is None or not self.registry.has(call.name):
            known = [s["function"]["name"] for s in self._tool_schemas()]
            return ToolResult(json.dumps({"error": f"unknown tool '{call.name}'", "available": known}),
                              ok=False, summary="unknown tool")
        context = ToolContext(request_id=self.request_id, session_id=self.request.session_id or "", call_id=call.id)
        return await self.registry.call(call.name, call.arguments, context)
