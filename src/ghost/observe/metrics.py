"""Ghost's Prometheus metrics: one registry per app (never the process-wide default, so several
Ghost apps in one process keep their own counts), every family Ghost exposes, and the bounds that
keep label values from growing with what clients or models send.

Label values come only from templates and fixed sets (Prometheus' naming and cardinality rules):
a route template, a tool's name when it is one of Ghost's own or its source (`skill`,
`mcp:<server>`), a served model, a user up to `--metrics-max-users`. Anything past a bound is
counted under `other`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

# No `*_created` series: they double what Prometheus keeps and no query of Ghost's needs them.
disable_created_metrics()
OTHER = "other"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Seconds: from a cached reply's milliseconds to a long agent turn's minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
ROUND_BUCKETS = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
MAX_MODELS = 32  # served models: a handful; the bound only guards against a misbehaving upstream list
MAX_SOURCES = 64  # MCP servers configured: a handful


class BoundedValues:
    """A label's values: the first `limit` distinct ones as they are, the rest as `other`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return OTHER
        self._seen.add(value)
        return value


class Metrics:
    """Every metric family of one Ghost app, in its own registry."""

    def __init__(self, max_users: int = 100) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_requests = Counter("ghost_http_requests", "HTTP requests answered, by route template, "
                                     "method and status.", ["route", "method", "status"], registry=r)
        self.http_duration = Histogram("ghost_http_request_duration_seconds", "Time from a request's "
                                       "arrival to its response's end, by route template.", ["route"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.turns = Counter("ghost_turns", "Agent turns finished, by served model and outcome.",
                             ["model", "outcome"], registry=r)
        self.turn_duration = Histogram("ghost_turn_duration_seconds", "Duration of an agent turn, "
                                       "start to its last event.", buckets=LATENCY_BUCKETS, registry=r)
        self.turns_in_progress = Gauge("ghost_turns_in_progress", "Agent turns running now.", registry=r)
        self.turn_rounds = Histogram("ghost_turn_rounds", "Upstream calls (rounds) one agent turn made.",
                                     buckets=ROUND_BUCKETS, registry=r)
        self.tool_calls = Counter("ghost_tool_calls", "Tool calls, by Ghost's tool name or source "
                                  "(skill, mcp:<server>) and outcome.", ["tool", "outcome"], registry=r)
        self.tool_duration = Histogram("ghost_tool_duration_seconds", "Duration of a tool call.", ["tool"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.upstream_requests = Counter("ghost_upstream_requests", "Chat calls to the upstream by the "
                                         "agent, by outcome (ok, error, cancelled).", ["outcome"], registry=r)
        self.upstream_ttft = Histogram("ghost_upstream_time_to_first_token_seconds", "Time from sending a "
                                       "chat call to the upstream to its first piece of answer.",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.upstream_tokens = Counter("ghost_upstream_tokens", "Tokens the upstream reported for the "
                                       "agent's chat calls, by direction (input, output).", ["direction"],
                                       registry=r)
        self.sandbox_runs = Counter("ghost_sandbox_runs", "Sandboxed command runs, by outcome (ok, error, "
                                    "timeout, killed).", ["outcome"], registry=r)
        self.compactions = Counter("ghost_context_compactions", "Times a turn shrank the conversation to "
                                   "fit the context window, by kind (tool_results, summary).", ["kind"], registry=r)
        self.workspace_operations = Counter("ghost_workspace_operations", "Workspace save, load, upload "
                                            "and download requests, by outcome (ok, error).",
                                            ["operation", "outcome"], registry=r)
        self.bundled_model_up = Gauge("ghost_bundled_model_up", "1 when the bundled model serves, 0 when "
                                      "it does not (or Ghost uses an upstream of its own).", registry=r)
        self.user_turns = Counter("ghost_user_turns", "Agent turns by user (the first "
                                  "--metrics-max-users users; the rest as 'other').", ["user"], registry=r)
        self.user_tokens = Counter("ghost_user_tokens", "Tokens of agent turns by user and direction "
                                   "(input, output).", ["user", "direction"], registry=r)
        self.user = BoundedValues(max_users)
        self.model = BoundedValues(MAX_MODELS)
        self.source = BoundedValues(MAX_SOURCES)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


def method_label(method: str) -> str:
    return method if method in HTTP_METHODS else OTHER
