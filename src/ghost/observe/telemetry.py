"""One app's telemetry: its metrics registry and its tracing, built once at start and handed to the
parts that observe (the HTTP middleware, the chat services, the tool registries, the executors)."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind

from ghost.config import Settings, TraceSettings
from ghost.observe.content import bounded
from ghost.observe.metrics import Metrics
from ghost.observe.tracing import Tracing, fail
from ghost.observe.turns import TurnObserver
from ghost.observe.upstream import ObservedUpstream


class Telemetry:
    def __init__(self, settings: Settings | None = None, traces: TraceSettings | None = None) -> None:
        self.metrics = Metrics(settings.metrics_max_users if settings is not None else 100)
        self.tracing = Tracing(traces, self.metrics)
        # False: nothing is observed at all (--no-metrics and tracing off): no hook is installed.
        self.observing = settings is None or not settings.no_metrics or self.tracing.enabled
        self.serves_metrics = settings is None or not settings.no_metrics

    def turns_of(self, user: str) -> TurnObserver:
        return TurnObserver(self.metrics, self.tracing, user)

    def upstream(self, inner: Any) -> Any:
        """`inner` (an `Upstream`) with its chat calls observed."""
        return ObservedUpstream(inner, self.metrics, self.tracing)

    def tool_label(self, name: str, source: str) -> str:
        """The `tool` label: Ghost's own tool by name, a skill or MCP server's by its source."""
        return self.metrics.source(source) if source else name

    async def tool_call(self, label: str, name: str, call_id: str, call: Awaitable[Any], arguments: str = "") -> Any:
        """Await one tool call (a `ToolResult`), counted and, with tracing on, in an `execute_tool`
        span that is current while it runs (an MCP server's request carries its `traceparent`).
        `arguments` (the model's JSON) and the result go on the span only with content capture on."""
        started = time.perf_counter()
        span = token = None
        if self.tracing.enabled:
            attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name}
            if call_id:
                attributes["gen_ai.tool.call.id"] = call_id
            if self.tracing.captures_content:
                attributes["gen_ai.tool.call.arguments"] = bounded(arguments, self.tracing.content_max_chars)
            span, ctx = self.tracing.start_span(f"execute_tool {name}", SpanKind.INTERNAL, attributes)
            token = otel_context.attach(ctx)
        outcome, error_type = "cancelled", ""
        try:
            result = await call
            outcome, error_type = ("ok", "") if getattr(result, "ok", False) else ("error", "tool_error")
            if span is not None and self.tracing.captures_content:
                span.set_attribute("gen_ai.tool.call.result",
                                   bounded(str(getattr(result, "content", "")), self.tracing.content_max_chars))
            return result
        except Exception as exc:
            outcome, error_type = "error", type(exc).__name__
            raise
        finally:
            self.metrics.tool_calls.inc((label, outcome))
            self.metrics.tool_duration.observe(time.perf_counter() - started, (label,))
            if span is not None:
                otel_context.detach(token)
                if error_type:
                    fail(span, error_type)
                span.end()

    def sandbox_run(self, outcome: str) -> None:
        self.metrics.sandbox_runs.inc((outcome,))

    def shutdown(self) -> None:
        self.tracing.shutdown()

