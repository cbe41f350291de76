"""Ghost's Prometheus metrics, scraped by a real Prometheus (Debian's `prometheus`, started here
with a scrape config that sends the admin key), read back with PromQL over Prometheus' HTTP API;
the key rules of /metrics; and label values that stay bounded whatever paths, tool names and users
come along."""

from __future__ import annotations

import functools
import random
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics,
                               enable_created_metrics, generate_latest)

from ghost.api.proxy.route import every_route
from ghost.app import create_app
from ghost.config import Settings
from ghost.events import Done, TextDelta, TurnStats, Usage
from ghost.observe import Telemetry
from ghost.llm.chat import Completion, Delta
from ghost.observe.metrics import OTHER, CounterFamily, HistogramFamily, Metrics
from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer, free_port
from ghost.testing.wait import until
from ghost.tools.base import ToolContext, ToolResult
from ghost.tools.registry import Registry, Tool

SCRAPE = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: ghost
    metrics_path: /metrics
    authorization:
      credentials_file: {key_file}
    static_configs:
      - targets: ["127.0.0.1:{port}"]
  - job_name: ghost_without_key
    metrics_path: /metrics
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""
WAIT_S = 90.0  # a generous bound for a loaded machine; every wait ends at its positive signal
_until = functools.partial(until, timeout=WAIT_S, every=0.2)


@pytest.fixture(scope="module")
def server(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    with GhostServer("--upstream-url", upstream.url, home=tmp_path_factory.mktemp("metrics")) as ghost:
        yield ghost


@pytest.fixture(scope="module")
def prometheus(server: GhostServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus package is needed (make system-deps installs it)"
    folder = tmp_path_factory.mktemp("prometheus")
    key_file = folder / "ghost.key"
    key_file.write_text(server.api_key or "")
    config = folder / "prometheus.yml"
    config.write_text(SCRAPE.format(key_file=key_file, port=server.port))
    port = free_port()
    log = open(folder / "prometheus.log", "wb")
    process = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
                                f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _until(lambda: _ready(url), f"prometheus at {url} never became ready: {(folder / 'prometheus.log').read_text()[-3000:]}")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def query(prometheus: str, promql: str) -> dict[str, float]:
    """An instant PromQL query: {series labels as text: value}."""
    reply = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=10).json()
    assert reply["status"] == "success", reply
    return {str(sorted(r["metric"].items())): float(r["value"][1]) for r in reply["data"]["result"]}


def value(prometheus: str, promql: str) -> float | None:
    result = query(prometheus, promql)
    assert len(result) <= 1, result
    return next(iter(result.values()), None)


def test_prometheus_scrapes_ghost_with_the_key_and_is_refused_without(prometheus: str) -> None:
    def targets() -> dict[str, dict[str, Any]]:
        active = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        return {t["labels"]["job"]: t for t in active}

    _until(lambda: {t["health"] for t in targets().values()} == {"up", "down"}, f"targets: {targets()}")
    assert targets()["ghost"]["health"] == "up"
    assert "401" in targets()["ghost_without_key"]["lastError"]
    assert value(prometheus, 'up{job="ghost"}') == 1.0


def test_a_tool_turn_moves_the_turn_tool_and_token_series(prometheus: str, server: GhostServer,
                                                          upstream: FakeUpstream) -> None:
    _until(lambda: value(prometheus, 'up{job="ghost"}') == 1.0, "Ghost was never scraped")
    assert value(prometheus, 'sum(ghost_turns_total)') is None  # no turn yet: the series moves below
    upstream.script(Reply(content="", tool_calls=[{"id": "call_m", "name": "execute",
                                                   "arguments": {"code": "print('metered')"}}]),
                    Reply(content="done", usage={"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49}))
    reply = httpx.post(f"{server.url}/v1/chat/completions", headers=server.headers, timeout=60,
                       json={"messages": [{"role": "user", "content": "run it"}]})
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] == "done"

    expected = {
        'ghost_turns_total{model="fake-model",outcome="ok"}': 1,
        'ghost_tool_calls_total{tool="execute",outcome="ok"}': 1,
        'ghost_tool_duration_seconds_count{tool="execute"}': 1,
        'ghost_sandbox_runs_total{outcome="ok"}': 1,
        'ghost_upstream_requests_total{outcome="ok"}': 2,
        'ghost_upstream_tokens_total{direction="input"}': 10 + 40,
        'ghost_upstream_tokens_total{direction="output"}': 5 + 9,
        'ghost_upstream_time_to_first_token_seconds_count': 2,
        'ghost_turn_rounds_sum': 2,
        'ghost_turn_duration_seconds_count': 1,
        'ghost_user_turns_total{user="admin"}': 1,
        'ghost_user_tokens_total{user="admin",direction="output"}': 14,
        'ghost_http_requests_total{route="/v1/chat/completions",method="POST",status="200"}': 1,
        'ghost_turns_in_progress': 0,
    }
    _until(lambda: all(value(prometheus, q) == v for q, v in expected.items()),
          f"series: { {q: value(prometheus, q) for q in expected} }")


def test_label_values_stay_bounded_with_a_thousand_paths(server: GhostServer, tmp_path: Path) -> None:
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=30) as http:
        for i in range(1000):
            assert http.get(f"/echo/path-{i}").status_code == 200  # proxied to the fake upstream
        http.get("/api/sessions/no-such-session")
        http.get("/metrics")  # counted once answered: the read below sees it whatever ran before
        text = http.get("/metrics").text
    routes = _label_values(text, "ghost_http_requests_total", "route")
    assert "proxy" in routes and "/metrics" in routes  # the probe reads labels
    assert "/api/sessions/{session_id}" in routes  # a template, never the path
    assert not any("path-" in r or "no-such" in r for r in routes)
    assert routes <= _route_templates(tmp_path) | {"proxy", "unmatched"}
    assert _count(text, 'ghost_http_requests_total{method="GET",route="proxy",status="200"}') >= 1000


def test_metrics_need_an_admins_key(server: GhostServer) -> None:
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    assert httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    made = httpx.post(f"{server.url}/api/users", headers=server.headers, json={"name": "mallory"})
    assert made.status_code == 201, made.text
    user_key = {"Authorization": f"Bearer {made.json()['key']}"}
    assert httpx.get(f"{server.url}/api/health", headers=user_key).status_code == 200  # the key works...
    refused = httpx.get(f"{server.url}/metrics", headers=user_key)
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"  # ...not here
    ok = httpx.get(f"{server.url}/metrics", headers=server.headers)
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/plain")
    assert "# TYPE ghost_turns_total counter" in ok.text


def test_workspace_operations_are_counted_by_outcome(server: GhostServer) -> None:
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=60) as http:
        assert http.post("/api/workspace/save").status_code == 200
        bad = http.post("/api/workspace/load", files={"file": ("w.zip", b"not a zip", "application/zip")})
        assert bad.status_code == 400, bad.text
        assert http.get("/api/download/no-such-file.txt").status_code == 404
        text = http.get("/metrics").text
    assert _count(text, 'ghost_workspace_operations_total{operation="save",outcome="ok"}') == 1
    assert _count(text, 'ghost_workspace_operations_total{operation="load",outcome="error"}') == 1
    assert _count(text, 'ghost_workspace_operations_total{operation="download",outcome="error"}') == 1


def test_metrics_public_serves_without_a_key(upstream: FakeUpstream, tmp_path: Path) -> None:
    with GhostServer("--upstream-url", upstream.url, "--metrics-public", home=tmp_path) as open_server:
        reply = httpx.get(f"{open_server.url}/metrics")
        assert reply.status_code == 200 and "ghost_bundled_model_up 0.0" in reply.text
        assert httpx.get(f"{open_server.url}/api/health").status_code == 401  # only /metrics is open


def test_the_openapi_document_says_whether_metrics_need_the_key(tmp_path: Path) -> None:
    keyed = create_app(Settings(home=tmp_path)).openapi()["paths"]["/metrics"]["get"]
    public = create_app(Settings(home=tmp_path, metrics_public=True)).openapi()["paths"]["/metrics"]["get"]
    assert keyed["security"] and public["security"] == []
    assert "text/plain" in keyed["responses"]["200"]["content"]


# --- bounds, in-process -------------------------------------------------------------------------------


class _Source:
    def __init__(self, tools: list[Tool]) -> None:
        self._tools = tools

    def tools(self) -> list[Tool]:
        return self._tools

    async def prompt_summary(self, max_chars: int) -> str:
        return ""


async def test_a_thousand_tool_names_make_a_handful_of_tool_labels() -> None:
    telemetry = Telemetry()
    registry = Registry(result_max_chars=1000)

    async def answer(**_: Any) -> ToolResult:
        return ToolResult("fine")

    registry.add(Tool("read_file", "own", {"type": "object", "properties": {}}, answer))
    skills = [Tool(f"skill_{i}", "s", {"type": "object", "properties": {}}, answer, source="skill") for i in range(1000)]
    mcp = [Tool(f"srv{i % 3}__t{i}", "m", {"type": "object", "properties": {}}, answer, check_arguments=False,
                source=f"mcp:srv{i % 3}") for i in range(1000)]
    registry.add_provider(_Source(skills))
    registry.add_provider(_Source(mcp))
    registry.observe(telemetry.tool_label, telemetry.tool_call)
    context = ToolContext("r", "s", "call")
    for i in range(1000):
        assert (await registry.call(f"skill_{i}", "{}", context)).ok
        assert (await registry.call(f"srv{i % 3}__t{i}", "{}", context)).ok
        assert not (await registry.call(f"made_up_{i}", "{}", context)).ok
    assert (await registry.call("read_file", "{}", context)).ok
    labels = _label_values(telemetry.metrics.exposition().decode(), "ghost_tool_calls_total", "tool")
    assert labels == {"read_file", "skill", "mcp:srv0", "mcp:srv1", "mcp:srv2", "unknown"}
    text = telemetry.metrics.exposition().decode()
    assert _count(text, 'ghost_tool_calls_total{outcome="ok",tool="skill"}') == 1000
    assert _count(text, 'ghost_tool_calls_total{outcome="error",tool="unknown"}') == 1000


async def test_users_past_the_bound_are_counted_as_other() -> None:
    telemetry = Telemetry(Settings(metrics_max_users=5))

    async def turn() -> Any:
        for event in (TextDelta("hi"), Usage(3, 2), TurnStats(0.1, 0.0, 1), Done("stop")):
            yield event

    for i in range(1000):
        async for _ in telemetry.turns_of(f"user{i}").observe(turn(), "fake-model"):
            pass
    text = telemetry.metrics.exposition().decode()
    assert _label_values(text, "ghost_user_turns_total", "user") == {"user0", "user1", "user2", "user3", "user4", OTHER}
    assert _count(text, f'ghost_user_turns_total{{user="{OTHER}"}}') == 995
    assert _count(text, 'ghost_turns_total{model="fake-model",outcome="ok"}') == 1000


async def test_a_turn_that_ends_early_is_cancelled_and_leaves_nothing_in_progress() -> None:
    telemetry = Telemetry()

    async def turn() -> Any:
        yield TextDelta("a")
        yield TextDelta("b")

    events = telemetry.turns_of("admin").observe(turn(), "m")
    await anext(events)
    assert _count(telemetry.metrics.exposition().decode(), "ghost_turns_in_progress") == 1
    await events.aclose()  # the client hung up
    text = telemetry.metrics.exposition().decode()
    assert _count(text, "ghost_turns_in_progress") == 0
    assert _count(text, 'ghost_turns_total{model="m",outcome="cancelled"}') == 1


# --- Ghost's own counts write what prometheus_client's metric objects write ---------------------------


def test_the_text_is_what_prometheus_clients_own_metrics_write_for_the_same_changes() -> None:
    mine = Metrics()
    reference = CollectorRegistry()
    made: dict[str, Any] = {}
    for family in mine.families:  # prometheus_client's own metric of each family, the same names and bounds
        labels = getattr(family, "labelnames", [])
        if isinstance(family, CounterFamily):
            made[family.name] = Counter(family.name, family.documentation, labels, registry=reference)
            for known in family.known:  # shown at 0 from the start
                made[family.name].labels(*known)
        elif isinstance(family, HistogramFamily):
            made[family.name] = Histogram(family.name, family.documentation, labels, buckets=family.bounds,
                                          registry=reference)
        else:
            made[family.name] = Gauge(family.name, family.documentation, registry=reference)
    assert len(made) == len(mine.families) == 19
    values = ["a", "b", 'q"uote\\', "line\nbreak", "ü", ""]
    rng = random.Random(26)
    disable_created_metrics()  # as Ghost's families have no `_created` series
    try:
        for _ in range(20_000):
            family = rng.choice(mine.families)
            theirs = made[family.name]
            labels = tuple(rng.choice(values) for _ in getattr(family, "labelnames", []))
            child = theirs.labels(*labels) if labels else theirs
            if isinstance(family, CounterFamily):
                amount = rng.choice([1, 1, 0, 2.5, 1000, rng.random()])
                family.inc(labels, amount)
                child.inc(amount)
            elif isinstance(family, HistogramFamily):
                value = rng.choice([0, 0.005, 0.0051, 1, 3, 64, 65, 300, 301, rng.random() * 400, rng.random()])
                family.observe(value, labels)
                child.observe(value)
            else:
                change = rng.choice(["inc", "dec", "set"])
                if change == "set":
                    family.set(rng.choice([0, 1]))
                    child.set(family.value)
                else:
                    getattr(family, change)()
                    getattr(child, change)()
        assert mine.exposition().decode() == generate_latest(reference).decode()
    finally:
        enable_created_metrics()


async def test_an_odd_negative_token_count_never_breaks_the_turn_nor_lowers_a_counter() -> None:
    telemetry = Telemetry()

    class Upstream:
        async def stream_chat(self, payload: dict[str, Any], request_id: str) -> Any:
            yield Completion([], "stop", Usage(-40, 7))  # what a misbehaving upstream may report

    seen = [item async for item in telemetry.upstream(Upstream()).stream_chat({"model": "m"}, "r")]
    assert len(seen) == 1
    text = telemetry.metrics.exposition().decode()
    assert _count(text, 'ghost_upstream_tokens_total{direction="output"}') == 7  # the probe reads the family
    assert 'direction="input"' not in text
    assert _count(text, 'ghost_upstream_requests_total{outcome="ok"}') == 1


async def test_a_final_value_of_any_class_is_counted_by_its_shape() -> None:
    telemetry = Telemetry()

    class Piece:  # not a dataclass: its values are looked at one by one
        def __init__(self, text: str) -> None:
            self.text = text

    class Last:
        def __init__(self) -> None:
            self.finish_reason, self.usage = "stop", Usage(11, 4)

    class Upstream:
        async def stream_chat(self, payload: dict[str, Any], request_id: str) -> Any:
            yield Delta("content", "a")  # Ghost's own pieces: skipped by their class's fields
            yield Piece("b")
            yield Last()

    seen = [item async for item in telemetry.upstream(Upstream()).stream_chat({"model": "m"}, "r")]
    assert len(seen) == 3
    text = telemetry.metrics.exposition().decode()
    assert _count(text, 'ghost_upstream_tokens_total{direction="input"}') == 11
    assert _count(text, 'ghost_upstream_tokens_total{direction="output"}') == 4
    assert _count(text, 'ghost_upstream_requests_total{outcome="ok"}') == 1


def _label_values(text: str, family: str, label: str) -> set[str]:
    values = set()
    for line in text.splitlines():
        if line.startswith(family + "{"):
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', line))
            if label in labels:
                values.add(labels[label])
    return values


def _count(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no series {series}")


def _route_templates(home: Path) -> set[str]:
    app = create_app(Settings(home=home))
    return {getattr(route, "path", "") for route in every_route(app.router.routes)}

