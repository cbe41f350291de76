"""The agent's upstream chat calls, watched at the `Upstream` interface: the same object with
`stream_chat` counted (outcome, time to first token, tokens) and, with tracing on, each call in a
`chat` span that is current while the call runs, so the request carries its `traceparent`.

It wraps whatever implements `ghost.llm.upstream.Upstream` and reads the stream's values only by
their shape (a final value with `usage` and `finish_reason`), so it does not depend on how the
call is made.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind

from ghost.errors import GhostError
from ghost.events import Usage
from ghost.observe.content import reply_attribute, request_attributes
from ghost.observe.metrics import Metrics
from ghost.observe.tracing import END, Context, Span, Tracing, fail


class ObservedUpstream:
    """`inner` with its chat calls observed; every other attribute is `inner`'s own."""

    def __init__(self, inner: Any, metrics: Metrics, tracing: Tracing) -> None:
        self.__dict__["_inner"] = inner
        self.__dict__["_metrics"] = metrics
        self.__dict__["_tracing"] = tracing

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)

    def stream_chat(self, payload: dict[str, Any], request_id: str) -> AsyncIterator[Any]:
        tracing = self._tracing
        if not tracing.enabled:
            return self._counted(lambda: self._inner.stream_chat(payload, request_id), None, None)
        model = str(payload.get("model", ""))
        attributes = {"gen_ai.operation.name": "chat", "gen_ai.request.model": model, "gen_ai.system": "openai"}
        if tracing.captures_content:
            attributes.update(request_attributes(payload.get("messages") or (), tracing.content_max_chars))
        span, ctx = tracing.start_span(f"chat {model}", SpanKind.CLIENT, attributes)
        return self._counted(lambda: self._inner.stream_chat(payload, request_id), span, ctx)

    async def _counted(self, call: Any, span: Span | None, ctx: Context | None) -> AsyncIterator[Any]:
        """The call's values, counted. Only its first step runs with `ctx` (the span) current: that
        step makes the request, which takes its `traceparent` from the current span; the rest only
        read the response, so attaching the context around each of them would be cost for nothing."""
        metrics = self._metrics
        started = time.perf_counter()
        first, outcome, error_type = True, "cancelled", ""
        reply: list[str] | None = [] if span is not None and self._tracing.captures_content else None
        # What the response tells the span, set in one call at its end: each call of the SDK's
        # takes its lock and checks its values (tens of µs a call).
        attributes: dict[str, Any] = {}
        stream: AsyncIterator[Any] | None = None
        try:
            token = otel_context.attach(ctx) if ctx is not None else None
            try:
                stream = aiter(call())  # made here, so a span's context is current when it starts
                item = await anext(stream, END)
            finally:
                if token is not None:
                    otel_context.detach(token)
            while item is not END:
                if first:
                    metrics.upstream_ttft.observe(time.perf_counter() - started)
                    first = False
                if reply is not None and getattr(item, "kind", None) == "content" and \
                        len(reply) < self._tracing.content_max_chars:  # enough kept: the rest is cut anyway
                    reply.append(item.text)
                if not _final_shape(type(item)):  # a piece of the answer: nothing to count
                    yield item
                    item = await anext(stream, END)
                    continue
                if isinstance(usage := getattr(item, "usage", None), Usage):
                    _count_tokens(metrics, usage, attributes)
                if (reason := getattr(item, "finish_reason", None)) is not None:
                    outcome = "ok"  # the final value: the caller may close the stream right after it
                    if span is not None and reason:
                        attributes["gen_ai.response.finish_reasons"] = (str(reason),)
                    if reply is not None:
                        attributes["gen_ai.output.messages"] = reply_attribute(
                            "".join(reply), getattr(item, "tool_calls", ()) or (), str(reason or ""),
                            self._tracing.content_max_chars)
                yield item
                item = await anext(stream, END)
            outcome = "ok"
        except Exception as exc:
            outcome = "error"
            error_type = exc.error_type if isinstance(exc, GhostError) else type(exc).__name__
            raise
        finally:
            try:
                if stream is not None and (closing := getattr(stream, "aclose", None)) is not None:
                    await closing()  # the response back to the pool (or closed) now, not when collected
            finally:
                metrics.upstream_requests.inc((outcome,))
                if span is not None:
                    if outcome == "error":
                        fail(span, error_type, attributes)
                    if attributes:
                        span.set_attributes(attributes)
                    span.end()


_FINAL_SHAPES: dict[type, bool] = {}
_FINAL_FIELDS = frozenset({"usage", "finish_reason"})


def _final_shape(kind: type) -> bool:
    """Whether values of `kind` may carry `usage` or `finish_reason` (the call's final value).
    For a dataclass (Ghost's `Delta` and `Completion`) its fields say so, looked up once per class:
    a streamed answer's hundreds of pieces then cost a dict lookup each instead of two failed
    attribute lookups. Any other class: assumed it may (each value is looked at, as before)."""
    final = _FINAL_SHAPES.get(kind)
    if final is None:
        final = not dataclasses.is_dataclass(kind) or any(
            field.name in _FINAL_FIELDS for field in dataclasses.fields(kind))
        if len(_FINAL_SHAPES) < 64:
            _FINAL_SHAPES[kind] = final
    return final


def _count_tokens(metrics: Metrics, usage: Usage, attributes: dict[str, Any]) -> None:
    """Counted into the metrics, and noted for the span (if any: else the note is dropped)."""
    metrics.upstream_tokens.inc(("input",), usage.prompt_tokens)
    metrics.upstream_tokens.inc(("output",), usage.completion_tokens)
    attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
    attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
