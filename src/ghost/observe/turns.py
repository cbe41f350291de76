"""Watching an agent turn from outside: its events (`ghost.events`) counted into the metrics,
and its `invoke_agent` span current through it when tracing is on.

Nothing inside the turn calls this: `ChatService` shows each of the turn's events to a `TurnWatch`
from the loop that forwards them, so it sees what any client sees — text, tool activity, usage,
the turn's stats, how it ended — and stays right whatever the turn does inside.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind

from ghost.events import ClientToolCall, Done, Error, Event, TextDelta, ToolActivity, TurnStats, Usage
from ghost.observe.metrics import Metrics
from ghost.observe.tracing import Context, Span, Tracing, fail

KNOWN_STOPS = frozenset({"max_tool_rounds"})


@dataclass
class _Outcome:
    """What the event stream said about the turn so far."""

    outcome: str = "cancelled"  # until an end is seen: the client left, or the turn was stopped
    error_type: str = ""
    usage: Usage | None = None
    rounds: int | None = None

    def see(self, event: Event, metrics: Metrics) -> None:
        if isinstance(event, Done):
            self.outcome = _done_outcome(event)
        elif isinstance(event, Error):
            self.outcome, self.error_type = "error", event.type
        elif isinstance(event, ClientToolCall):
            self.outcome = "client_tool_call"
        elif isinstance(event, Usage):
            self.usage = event
        elif isinstance(event, TurnStats):
            self.rounds = event.rounds
        elif isinstance(event, ToolActivity) and event.compaction is not None:
            metrics.compactions.inc((event.compaction,))


def _done_outcome(done: Done) -> str:
    if done.stop_reason:
        return done.stop_reason if done.stop_reason in KNOWN_STOPS else "stopped"
    return "length" if done.finish_reason == "length" else "ok"


class TurnObserver:
    """Observes one user's turns (the user is fixed per chat service)."""

    def __init__(self, metrics: Metrics, tracing: Tracing, user: str) -> None:
        self.metrics, self.tracing = metrics, tracing
        self.user = metrics.user(user)

    def watch(self, model: str) -> TurnWatch:
        """A turn of `model` starting now, to be shown each event and ended once."""
        if not self.tracing.enabled:
            return TurnWatch(self, model, None, None)
        span, ctx = self.tracing.start_span(f"invoke_agent {model}", SpanKind.INTERNAL, {
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "ghost", "gen_ai.request.model": model})
        return TurnWatch(self, model, span, ctx)

    async def observe(self, events: AsyncIterator[Event], model: str) -> AsyncIterator[Event]:
        """`events`, watched: for a consumer that has no loop of its own to call a watch from."""
        watch = self.watch(model)
        iterator = aiter(events)
        try:
            async for event in iterator:
                watch.see(event)
                yield event
        except BaseException as exc:
            watch.failed(exc)
            raise
        finally:
            try:
                if (closing := getattr(iterator, "aclose", None)) is not None:
                    await closing()  # its cleanup still inside the span
            finally:
                watch.end()

    def record(self, seen: _Outcome, model: str, seconds: float, span: Span | None) -> None:
        metrics = self.metrics
        metrics.turns.inc((metrics.model(model), seen.outcome))
        metrics.turn_duration.observe(seconds)
        metrics.user_turns.inc((self.user,))
        if seen.rounds is not None:
            metrics.turn_rounds.observe(seen.rounds)
        if seen.usage is not None:
            metrics.user_tokens.inc((self.user, "input"), seen.usage.prompt_tokens)
            metrics.user_tokens.inc((self.user, "output"), seen.usage.completion_tokens)
        if span is None:
            return
        attributes: dict[str, str | int] = {"ghost.turn.outcome": seen.outcome}
        if seen.usage is not None:
            attributes["gen_ai.usage.input_tokens"] = seen.usage.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = seen.usage.completion_tokens
        if seen.outcome == "error":
            fail(span, seen.error_type or "error", attributes)
        span.set_attributes(attributes)  # one call: the SDK locks and checks once a call
        span.end()


class TurnWatch:
    """One turn, watched from the loop that forwards its events — `see` each, `failed` on an
    exception, `end` once in a `finally` — with no generator of its own: a turn streams hundreds
    of events, and a generator wrapped around them cost a hop each.

    With tracing on, the turn's span is current from the watch's start to its end in the task
    that made it: attached once, not around each step. That task sees the span between steps
    too, which is right when it is the turn's own: Ghost runs every turn in a task of its own
    (`ghost.agent.pump`), which only hands the events on. Detached only in that task: should the
    turn be closed from another (collected unfinished), that task's context was never changed."""

    __slots__ = ("_observer", "_model", "_span", "_seen", "_started", "_token", "_task", "_ended")

    def __init__(self, observer: TurnObserver, model: str, span: Span | None, ctx: Context | None) -> None:
        self._observer, self._model, self._span = observer, model, span
        self._seen = _Outcome()
        self._started = time.perf_counter()
        self._token = otel_context.attach(ctx) if ctx is not None else None
        self._task = asyncio.current_task()
        self._ended = False
        observer.metrics.turns_in_progress.inc()

    def see(self, event: Event) -> None:
        if type(event) is not TextDelta:  # most of a turn's events: nothing to count
            self._seen.see(event, self._observer.metrics)

    def failed(self, exc: BaseException) -> None:
        """The turn raised `exc`: an error, or (not an `Exception`) cancelled — the caller went away."""
        self._seen.outcome = "error" if isinstance(exc, Exception) else "cancelled"
        self._seen.error_type = type(exc).__name__

    def end(self) -> None:
        if self._ended:
            return
        self._ended = True
        if self._token is not None and asyncio.current_task() is self._task:
            otel_context.detach(self._token)
        self._observer.metrics.turns_in_progress.dec()
        self._observer.record(self._seen, self._model, time.perf_counter() - self._started, self._span)
