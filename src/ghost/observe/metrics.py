"""Ghost's Prometheus metrics: one registry per app (never the process-wide default, so several
Ghost apps in one process keep their own counts), every family Ghost exposes, and the bounds that
keep label values from growing with what clients or models send.

Label values come only from templates and fixed sets (Prometheus' naming and cardinality rules):
a route template, a tool's name when it is one of Ghost's own or its source (`skill`,
`mcp:<server>`), a served model, a user up to `--metrics-max-users`. Anything past a bound is
counted under `other`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

OTHER = "other"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Seconds: from a cached reply's milliseconds to a long agent turn's minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
ROUND_BUCKETS = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
MAX_MODELS = 32  # served models: a handful; the bound only guards against a misbehaving upstream list
MAX_SOURCES = 64  # MCP servers configured: a handful
Labels = tuple[str, ...]


# Why Ghost keeps its own counts instead of prometheus_client's `Counter` and `Histogram` objects:
# those take a lock and check their labels on every change (`labels(...)` ~1 µs, an `inc` or
# `observe` ~0.3–0.6 µs), and a turn makes ~15 changes — half of what metrics cost a short turn.
# Every change here is made on the app's event loop (the HTTP middleware, the turn, upstream and
# tool observers, the sandbox's outcome hook; `/metrics` reads them on the same loop), so a plain
# dict needs no lock. The one exception, the exported spans' counter, has one writer (the export
# thread) and a fixed set of keys. prometheus_client still does the rest: the registry, the families
# (`Collector.collect`) and the text format; a test holds the text equal to what its own metric
# objects write for the same changes.


class CounterFamily:
    """A counter's values by label values. Only goes up: a negative amount (an upstream's odd
    token count) is ignored rather than raised into the turn that reported it. A counter without
    labels, and each of `known` label values, is shown at 0 from the start."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (),
                 known: Sequence[Labels] = ()) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, list(labelnames)
        self.known = tuple(known)
        self.values: dict[Labels, float] = {labels: 0.0 for labels in self.known or ([()] if not labelnames else [])}

    def inc(self, labels: Labels = (), amount: float = 1.0) -> None:
        if amount >= 0:
            self.values[labels] = self.values.get(labels, 0.0) + amount

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in self.values.items():
            family.add_metric(labels, value)
        return family


class HistogramFamily:
    """A histogram's buckets by label values: per series, the count in each bucket (the last one
    `+Inf`), then the sum. Bucket bounds are inclusive (`le`), as Prometheus' are."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float],
                 labelnames: Sequence[str] = ()) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, list(labelnames)
        self.bounds = tuple(float(bound) for bound in buckets)
        self._le = [floatToGoString(bound) for bound in self.bounds] + ["+Inf"]
        self.series: dict[Labels, list[float]] = {}
        if not labelnames:
            self.series[()] = [0.0] * (len(self.bounds) + 2)  # shown from the start, as a plain histogram is

    def observe(self, value: float, labels: Labels = ()) -> None:
        counts = self.series.get(labels)
        if counts is None:
            counts = self.series[labels] = [0.0] * (len(self.bounds) + 2)
        counts[bisect_left(self.bounds, value) if value == value else -2] += 1  # NaN: only in +Inf
        counts[-1] += value

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, counts in self.series.items():
            cumulative, buckets = 0.0, []
            for le, count in zip(self._le, counts):
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric(labels, buckets, counts[-1])
        return family


class GaugeFamily:
    """A gauge without labels."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name, self.documentation = name, documentation
        self.value = 0.0

    def inc(self) -> None:
        self.value += 1

    def dec(self) -> None:
        self.value -= 1

    def set(self, value: float) -> None:
        self.value = float(value)

    def family(self) -> Metric:
        return GaugeMetricFamily(self.name, self.documentation, value=self.value)


Family = CounterFamily | HistogramFamily | GaugeFamily


class _Families(Collector):
    """The app's families, collected in the order they were made (the text's order)."""

    def __init__(self, families: list[Family]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        for family in self.families:
            yield family.family()


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
        families: list[Family] = []

        def counter(name: str, documentation: str, labelnames: Sequence[str],
                    known: Sequence[Labels] = ()) -> CounterFamily:
            families.append(family := CounterFamily(name, documentation, labelnames, known))
            return family

        def histogram(name: str, documentation: str, buckets: Sequence[float],
                      labelnames: Sequence[str] = ()) -> HistogramFamily:
            families.append(family := HistogramFamily(name, documentation, buckets, labelnames))
            return family

        def gauge(name: str, documentation: str) -> GaugeFamily:
            families.append(family := GaugeFamily(name, documentation))
            return family

        self.http_requests = counter("ghost_http_requests", "HTTP requests answered, by route template, "
                                     "method and status.", ["route", "method", "status"])
        self.http_duration = histogram("ghost_http_request_duration_seconds", "Time from a request's "
                                       "arrival to its response's end, by route template.", LATENCY_BUCKETS,
                                       ["route"])
        self.turns = counter("ghost_turns", "Agent turns finished, by served model and outcome.",
                             ["model", "outcome"])
        self.turn_duration = histogram("ghost_turn_duration_seconds", "Duration of an agent turn, "
                                       "start to its last event.", LATENCY_BUCKETS)
        self.turns_in_progress = gauge("ghost_turns_in_progress", "Agent turns running now.")
        self.turn_rounds = histogram("ghost_turn_rounds", "Upstream calls (rounds) one agent turn made.",
                                     ROUND_BUCKETS)
        self.tool_calls = counter("ghost_tool_calls", "Tool calls, by Ghost's tool name or source "
                                  "(skill, mcp:<server>) and outcome.", ["tool", "outcome"])
        self.tool_duration = histogram("ghost_tool_duration_seconds", "Duration of a tool call.", LATENCY_BUCKETS,
                                       ["tool"])
        self.upstream_requests = counter("ghost_upstream_requests", "Chat calls to the upstream by the "
                                         "agent, by outcome (ok, error, cancelled).", ["outcome"])
        self.upstream_ttft = histogram("ghost_upstream_time_to_first_token_seconds", "Time from sending a "
                                       "chat call to the upstream to its first piece of answer.", LATENCY_BUCKETS)
        self.upstream_tokens = counter("ghost_upstream_tokens", "Tokens the upstream reported for the "
                                       "agent's chat calls, by direction (input, output).", ["direction"])
        self.sandbox_runs = counter("ghost_sandbox_runs", "Sandboxed command runs, by outcome (ok, error, "
                                    "timeout, killed).", ["outcome"])
        self.compactions = counter("ghost_context_compactions", "Times a turn shrank the conversation to "
                                   "fit the context window, by kind (tool_results, summary).", ["kind"])
        self.workspace_operations = counter("ghost_workspace_operations", "Workspace save, load, upload "
                                            "and download requests, by outcome (ok, error).",
                                            ["operation", "outcome"])
        self.bundled_model_up = gauge("ghost_bundled_model_up", "1 when the bundled model serves, 0 when "
                                      "it does not (or Ghost uses an upstream of its own).")
        self.user_turns = counter("ghost_user_turns", "Agent turns by user (the first "
                                  "--metrics-max-users users; the rest as 'other').", ["user"])
        self.user_tokens = counter("ghost_user_tokens", "Tokens of agent turns by user and direction "
                                   "(input, output).", ["user", "direction"])
        # With tracing on: spans Ghost queued for export, and what the exporter made of them. The
        # difference is what is still queued or was dropped (a full queue: OTEL_BSP_MAX_QUEUE_SIZE).
        self.trace_spans_ended = counter("ghost_trace_spans_ended", "Spans recorded with tracing on and "
                                         "queued for export.", [])
        # Changed by the batch processor's export thread, its only writer; its label values exist
        # from the start, so a scrape on the event loop never sees the dict grow.
        self.trace_spans_exported = counter("ghost_trace_spans_exported", "Queued spans the OTLP "
                                            "exporter sent, by outcome (ok, failed: the collector "
                                            "refused the batch or could not be reached).", ["outcome"],
                                            known=[("ok",), ("failed",)])
        self.families = families
        self.registry = CollectorRegistry()
        self.registry.register(_Families(families))
        self.user = BoundedValues(max_users)
        self.model = BoundedValues(MAX_MODELS)
        self.source = BoundedValues(MAX_SOURCES)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


def method_label(method: str) -> str:
    return method if method in HTTP_METHODS else OTHER
