"""Schema fuzzing, CI-sized: schemathesis against a real Ghost's own /openapi.json.

Every documented operation, the catch-all proxy included, gets generated requests (valid and
invalid by the schema) with the key, as a bearer token and without a key; then hand-made
scenarios reach what random data cannot (files that exist, stored sessions, a zip that loads,
an upstream that fails). No response may be a 5xx, break its documented status, content type,
headers or schema, or fail to arrive (a hang). The longer run is `python bench/fuzz.py`; see
docs/fuzzing.md. Nothing is excluded: the proxy forwards to the fake upstream like any request.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ghost.testing.fake_upstream import FakeUpstream
from ghost.testing.fuzz import Fuzzer, FuzzReport, answered_without_key, auths, open_routes, scenarios
from ghost.testing.server import TEST_KEY, GhostServer

# Examples per operation and generation mode (valid, invalid). Sized for about half a minute on a
# busy two-core machine; the chat bodies are the slow ones to generate.
EXAMPLES_WITH_KEY = 8
EXAMPLES_OTHERWISE = 3
READ_TIMEOUT_S = 2.0
# Small caps, so what the fuzzer uploads, saves and loads stays small.
FUZZ_ENV = {
    "GHOST_MAX_REQUEST_BYTES": "65536",
    "GHOST_PROXY_MAX_BODY_BYTES": "65536",
    "GHOST_UPLOAD_MAX_BYTES": "65536",
    "GHOST_WORKSPACE_SAVE_MAX_BYTES": "1048576",
    "GHOST_WORKSPACE_LOAD_MAX_BYTES": "1048576",
    "GHOST_WORKSPACE_LOAD_MAX_ENTRIES": "200",
    "GHOST_WORKSPACE_WAIT_S": "2",
    "GHOST_READ_TIMEOUT": str(READ_TIMEOUT_S),
}


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding only the fuzz server's home: anything else appearing here escaped it."""
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def fuzz_ghost(upstream: FakeUpstream, fuzz_root: Path) -> Iterator[GhostServer]:
    with GhostServer("--upstream-url", upstream.url, home=fuzz_root / "home", env=FUZZ_ENV) as server:
        yield server


def fuzz(server: GhostServer, auth: str, examples: int) -> tuple[Fuzzer, Any, FuzzReport]:
    fuzzer = Fuzzer(server.url, max_examples=examples, timeout=30)
    schema = fuzzer.load()
    report = fuzzer.run(schema, auths(TEST_KEY)[auth])
    return fuzzer, schema, report


def documented_operations(schema: Any) -> set[str]:
    return {result.ok().label for result in schema.get_all_operations()}


@pytest.mark.timeout(900)  # a hang guard: the run grows with the routes, and a busy machine is slow
def test_fuzz_with_the_key(fuzz_ghost: GhostServer, upstream: FakeUpstream, fuzz_root: Path) -> None:
    fuzzer, schema, report = fuzz(fuzz_ghost, "key", EXAMPLES_WITH_KEY)
    scenarios(fuzzer, schema, auths(TEST_KEY)["key"], upstream, upstream_timeout_s=READ_TIMEOUT_S)
    print(report.summary())
    assert not report.problems, report.summary()
    assert set(report.per_operation()) == documented_operations(schema)
    served = {label for (label, status) in report.statuses if status == 200}
    assert len(served) >= 20, report.summary()  # not only refusals: most operations also succeeded
    assert [path.name for path in fuzz_root.iterdir()] == ["home"]


@pytest.mark.timeout(900)  # a hang guard: the run grows with the routes, and a busy machine is slow
def test_fuzz_with_a_bearer_token(fuzz_ghost: GhostServer) -> None:
    _, _, report = fuzz(fuzz_ghost, "bearer", EXAMPLES_OTHERWISE)
    print(report.summary())
    assert not report.problems, report.summary()
    assert not {status for (_, status) in report.statuses} & {401}, report.summary()


@pytest.mark.timeout(900)  # a hang guard: the run grows with the routes, and a busy machine is slow
def test_fuzz_without_the_key(fuzz_ghost: GhostServer) -> None:
    _, schema, report = fuzz(fuzz_ghost, "none", EXAMPLES_OTHERWISE)
    print(report.summary())
    assert not report.problems, report.summary()
    assert set(report.per_operation()) == documented_operations(schema)
    # Judged by the path each request really reached: a generated proxy path may land on an open route.
    assert answered_without_key(report, schema) == []
    assert open_routes(schema) == {("GET", "/"), ("GET", "/api/version"), ("GET", "/api/tags"), ("POST", "/api/show"),
                                   ("GET", "/api/health/live"), ("GET", "/api/health/ready")}
    assert {status for (_, method, path, status) in report.reached if (method, path) in open_routes(schema)} >= {200}
