"""Schema fuzzing: schemathesis against Ghost's own /openapi.json, for tests/test_fuzz.py and bench/fuzz.py.

Every documented operation gets generated requests, schema-valid ones ("positive") and ones that
break the schema ("negative"), sent with the key, as a bearer token, or without it. Each response
must pass the checks below: no 5xx, a documented status, a documented content type and headers,
a body that matches its schema (SSE events and NDJSON lines one by one). A request that gets no
answer within `timeout` seconds is a hang, and fails like a check.

Failures are collected, not raised, so one run reports every distinct problem; they are told apart
by operation, check and status. Needs the `test` extra (schemathesis).
"""

from __future__ import annotations

import itertools
import json
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import hypothesis
import requests
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, ServerError
from schemathesis.openapi.checks import UndefinedStatusCode
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                               response_schema_conformance, status_code_conformance)

from ghost.testing.fake_upstream import FakeUpstream, Reply

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
FRAMING_HEADERS = ("Content-Length", "Transfer-Encoding")
REPRODUCE_CHARS = 1500  # generated bodies can be huge; the first part of the curl line is enough to see it


@schemathesis.deserializer("application/x-ndjson")
def _ndjson_lines(_ctx: Any, response: Any) -> list[Any]:
    """An NDJSON body as the list of its lines, which is what Ghost's schema for it describes."""
    return [json.loads(line) for line in response.content.decode("utf-8").splitlines() if line.strip()]


def close_models(document: dict[str, Any]) -> dict[str, Any]:
    """Add `additionalProperties: false` to every model that leaves it unsaid.

    Ghost ignores unknown request fields, so its document leaves objects open; the generator then
    spends most of its time inventing deep random extra fields that no code reads. Closed, requests
    carry only documented fields, and a reply with a field the document does not name fails.
    Models that are open on purpose (`dict[str, Any]` fields) say `additionalProperties: true`.
    """
    for model in document.get("components", {}).get("schemas", {}).values():
        if model.get("type") == "object" and "properties" in model:
            model.setdefault("additionalProperties", False)
    return document


# A raw zip body (/api/workspace/load) is sent as the bytes it is, like application/octet-stream.
schemathesis.serializer.alias("application/zip", "application/octet-stream")


@dataclass(frozen=True)
class Auth:
    name: str
    headers: dict[str, str]


def auths(key: str) -> dict[str, Auth]:
    return {"key": Auth("key", {"X-Ghost-Key": key}),
            "bearer": Auth("bearer", {"Authorization": f"Bearer {key}"}),
            "none": Auth("none", {})}


@dataclass
class Problem:
    operation: str
    kind: str  # the check's title, or "hang" / "connection"
    status: int | None
    message: str
    reproduce: str
    seen: int = 1

    def describe(self) -> str:
        status = f" -> {self.status}" if self.status is not None else ""
        return (f"{self.operation}{status}: {self.kind} (x{self.seen})\n  {self.message.strip()[:600]}\n"
                f"  {self.reproduce[:REPRODUCE_CHARS]}")


@dataclass
class FuzzReport:
    cases: Counter[str] = field(default_factory=Counter)  # "METHOD /path [auth]" -> requests sent
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)  # (label, status) -> responses
    # (variant, method, path as sent, status) -> responses: what each request really reached (a
    # generated proxy path such as "." or "api/tags" lands on one of Ghost's own routes).
    reached: Counter[tuple[str, str, str, int]] = field(default_factory=Counter)
    problems: dict[tuple[str, str, int | None], Problem] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.cases.values())

    def add_problem(self, problem: Problem) -> None:
        key = (problem.operation, problem.kind, problem.status)
        if key in self.problems:
            self.problems[key].seen += 1
        else:
            self.problems[key] = problem

    def per_operation(self) -> dict[str, int]:
        """Cases per "METHOD /path", over every auth variant."""
        totals: Counter[str] = Counter()
        for label, count in self.cases.items():
            totals[label.rsplit(" [", 1)[0]] += count
        return dict(totals)

    def summary(self) -> str:
        lines = [f"{self.total} cases over {len(self.per_operation())} operations"]
        for label, count in sorted(self.cases.items()):
            seen = sorted((status, n) for (where, status), n in self.statuses.items() if where == label)
            lines.append(f"  {count:6d}  {label:45s} " + " ".join(f"{status}x{n}" for status, n in seen))
        if self.problems:
            lines.append(f"{len(self.problems)} distinct problems:")
            lines += [problem.describe() for problem in self.problems.values()]
        return "\n".join(lines)


@dataclass
class Fuzzer:
    base_url: str
    max_examples: int = 20
    timeout: float = 30.0
    seed: int | None = 0  # None: a fresh random run each time
    modes: Iterable[GenerationMode] = MODES
    skip: Callable[[str, str], bool] = lambda method, path: False
    checks: list[Any] = field(default_factory=lambda: list(CHECKS))
    report: FuzzReport = field(default_factory=FuzzReport)

    def load(self, *, closed: bool = True) -> Any:
        """The served document; `closed`: read with every model closed to unknown fields (see `close_models`)."""
        if not closed:
            schema = schemathesis.openapi.from_url(f"{self.base_url}/openapi.json", timeout=self.timeout)
        else:
            document = requests.get(f"{self.base_url}/openapi.json", timeout=self.timeout).json()
            schema = schemathesis.openapi.from_dict(close_models(document))
        schema.config.update(base_url=self.base_url)
        return schema

    def run(self, schema: Any, auth: Auth, examples: int | None = None) -> FuzzReport:
        for result in schema.get_all_operations():
            operation = result.ok()
            if self.skip(operation.method.upper(), operation.path):
                continue
            for mode in self.modes:
                self._fuzz(operation, mode, auth, examples or self.max_examples)
        return self.report

    def _seed(self, label: str) -> int | None:
        """One seed per operation and auth variant: operations sharing a body model (the chat
        routes) and the auth variants each get requests of their own."""
        return None if self.seed is None else self.seed + zlib.crc32(label.encode())

    def _fuzz(self, operation: Any, mode: GenerationMode, auth: Auth, examples: int) -> None:
        label = f"{operation.label} [{auth.name}]"

        @hypothesis.settings(max_examples=examples, deadline=None, database=None, derandomize=False,
                             phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
                             suppress_health_check=list(hypothesis.HealthCheck),
                             verbosity=hypothesis.Verbosity.quiet)
        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        def one(case: Any) -> None:
            self.report.cases[label] += 1
            self._send(case, operation.label, label, auth)

        if (seed := self._seed(label)) is not None:
            one = hypothesis.seed(seed)(one)
        try:
            one()
        except hypothesis.errors.Unsatisfiable:
            pass  # negative mode on an operation with nothing to get wrong (no parameters, no body)

    def scenario(self, schema: Any, auth: Auth, method: str, path: str, expect: int = 200, **case: Any) -> Any:
        """Send one hand-made case, check it like a generated one and that it got `expect`.

        For what random data cannot reach: a file that exists, a session that has history, a zip
        that loads, an upstream that fails. Counted under the label's variant "[scenario]". Returns
        the response (None if there was none), for chaining.
        """
        operation = schema[path][method]
        label = f"{operation.label} [scenario]"
        self.report.cases[label] += 1
        response = self._send(operation.Case(**case), operation.label, label, auth, expect)
        if response is not None and response.status_code != expect:
            self.report.add_problem(Problem(operation.label, f"expected {expect}", response.status_code,
                                            response.text[:300], f"scenario {case}"[:REPRODUCE_CHARS]))
        return response

    def _send(self, case: Any, operation: str, label: str, auth: Auth, expect: int | None = None) -> Any:
        # The generated case may carry a made-up key; the run's own auth variant decides. Made-up
        # framing headers are dropped too: uvicorn's HTTP parser refuses a request with a malformed
        # one (a plain-text 400) before Ghost ever sees it.
        for name in ("X-Ghost-Key", "Authorization", *FRAMING_HEADERS):
            (case.headers or {}).pop(name, None)
        reproduce = case.as_curl_command(headers=auth.headers)
        try:
            response = case.call(base_url=self.base_url, headers=auth.headers, timeout=self.timeout)
        except requests.Timeout:
            self.report.add_problem(Problem(operation, "hang", None, f"no answer in {self.timeout}s", reproduce))
            return None
        except requests.ConnectionError as exc:
            self.report.add_problem(Problem(operation, "connection", None, str(exc), reproduce))
            return None
        self.report.statuses[(label, response.status_code)] += 1
        sent = urlsplit(response.request.url).path
        self.report.reached[(auth.name, case.method.upper(), sent, response.status_code)] += 1
        try:
            case.validate_response(response, checks=self.checks)
        except Failure as failure:
            self._failed([failure], operation, response, reproduce, expect)
        except BaseExceptionGroup as group:
            failures = [exc for exc in group.exceptions if isinstance(exc, Failure)]
            if len(failures) != len(group.exceptions):
                raise
            self._failed(failures, operation, response, reproduce, expect)
        return response

    def _failed(self, failures: list[Failure], operation: str, response: Any, reproduce: str,
                expect: int | None) -> None:
        for failure in failures:
            if isinstance(failure, ServerError) and response.status_code == expect:
                continue  # a scenario that makes the upstream fail: the 502 or 504 is the point
            if response.status_code >= 500 and isinstance(failure, UndefinedStatusCode):
                continue  # the server error itself is reported; the 5xx missing from the doc adds nothing
            message = failure.message or response.text[:300]  # a 500 names its request id: see the log
            self.report.add_problem(Problem(operation, failure.title, response.status_code, message, reproduce))


def open_routes(schema: Any) -> set[tuple[str, str]]:
    """(METHOD, path) of every operation the document marks as needing no key (`security: []`)."""
    return {(method.upper(), path) for path, item in schema.raw_schema["paths"].items()
            for method, operation in item.items() if operation.get("security") == []}


def answered_without_key(report: FuzzReport, schema: Any) -> list[str]:
    """Requests of the "none" variant that got past the key check: anything but a 401 (or the 405
    that a wrong method on one of Ghost's own paths gets first) from a route that is not open."""
    allowed = open_routes(schema)
    return [f"{method} {path} -> {status} (x{count})"
            for (variant, method, path, status), count in sorted(report.reached.items())
            if variant == "none" and (method, path) not in allowed and status not in (401, 405)]


# --- hand-made cases -------------------------------------------------------------------------------------


def scenarios(fuzzer: Fuzzer, schema: Any, auth: Auth, upstream: FakeUpstream, upstream_timeout_s: float) -> None:
    """The success paths random data cannot reach, and the upstream failures only a script can cause.

    Every response is checked against the document like a generated one. `upstream_timeout_s` is
    the server's read timeout: one scenario stalls the upstream past it for a 504.
    """
    _chats(fuzzer, schema, auth)
    _scripted(fuzzer, schema, auth, upstream, upstream_timeout_s + 0.5)
    _sessions(fuzzer, schema, auth)
    _files(fuzzer, schema, auth)


CHAT = {"messages": [{"role": "user", "content": "hello"}], "session_id": "fuzz-scenario"}


def _chats(f: Fuzzer, schema: Any, auth: Auth) -> None:
    streamed = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    for path in ("/v1/chat/completions", "/chat"):
        f.scenario(schema, auth, "POST", path, body=CHAT)
        f.scenario(schema, auth, "POST", path, body=streamed)
    f.scenario(schema, auth, "POST", "/api/chat", body=CHAT)  # NDJSON
    f.scenario(schema, auth, "POST", "/api/chat", body={**CHAT, "stream": False})
    f.scenario(schema, auth, "POST", "/api/chat", body=CHAT, headers={"Accept": "text/event-stream"})
    f.scenario(schema, auth, "POST", "/api/generate", body={"prompt": "hello", "system": "be brief"})
    f.scenario(schema, auth, "POST", "/api/generate", body={"prompt": "hello", "stream": False})


def _scripted(f: Fuzzer, schema: Any, auth: Auth, upstream: FakeUpstream, stall_s: float) -> None:
    """Upstream errors before the first byte (502, 504) and in-band after it, on every streaming
    format; calls of a client's own tool, on every reply format."""
    streamed = {**CHAT, "stream": True}
    for path in ("/v1/chat/completions", "/api/chat", "/api/generate"):
        body = {"prompt": "hello"} if path == "/api/generate" else streamed
        upstream.script(Reply(status=500))
        f.scenario(schema, auth, "POST", path, expect=502, body=body)
        upstream.script(Reply(content="one two three four", fail_after=2))
        f.scenario(schema, auth, "POST", path, body=body)
    upstream.script(Reply(first_delay=stall_s))
    f.scenario(schema, auth, "POST", "/v1/chat/completions", expect=504, body=CHAT)
    with_tools = {**CHAT, "tools": [{"type": "function", "function": {"name": "client_tool"}}]}
    for path, stream in itertools.product(("/v1/chat/completions", "/api/chat"), (False, True)):
        upstream.script(Reply(tool_calls=[{"name": "client_tool", "arguments": {"x": 1}}]))
        f.scenario(schema, auth, "POST", path, body={**with_tools, "stream": stream})


def _sessions(f: Fuzzer, schema: Any, auth: Auth) -> None:
    f.scenario(schema, auth, "GET", "/api/sessions")
    f.scenario(schema, auth, "GET", "/api/sessions/{session_id}", path_parameters={"session_id": "fuzz-scenario"})
    f.scenario(schema, auth, "DELETE", "/api/sessions/{session_id}", path_parameters={"session_id": "fuzz-scenario"})


def _files(f: Fuzzer, schema: Any, auth: Auth) -> None:
    f.scenario(schema, auth, "POST", "/api/upload", media_type="multipart/form-data",
               body={"file": b"hello from the fuzzer\n", "path": "fuzz"})
    named = {"filename": "fuzz/file"}  # a multipart part's filename is its field name
    f.scenario(schema, auth, "GET", "/api/download/{filename}", path_parameters=named)
    f.scenario(schema, auth, "GET", "/api/download/{filename}", expect=206, path_parameters=named,
               headers={"Range": "bytes=0-4"})
    for bad_range, status in (("bytes=x-y", 400), ("bytes=999999-", 416)):
        f.scenario(schema, auth, "GET", "/api/download/{filename}", expect=status, path_parameters=named,
                   headers={"Range": bad_range})
    f.scenario(schema, auth, "GET", "/api/download/{filename}", expect=400, path_parameters={"filename": "fuzz"})
    saved = f.scenario(schema, auth, "POST", "/api/workspace/save", body={}, media_type="application/json")
    if saved is not None and saved.status_code == 200:
        f.scenario(schema, auth, "POST", "/api/workspace/load", media_type="multipart/form-data",
                   body={"file": saved.content})
        f.scenario(schema, auth, "POST", "/api/workspace/load", media_type="application/zip", body=saved.content)
