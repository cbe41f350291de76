"""The chat fast path (`ghost.api.chat_fast_path`) answers exactly as FastAPI's routing does.

Two Ghosts on loopback built by `create_app` from the same settings, one as shipped and one whose
fast path knows no route (every request then goes through FastAPI's router and dependencies), get
the same requests; their answers must be the same: status, body and headers, less what differs
between any two replies (the request id, the date, a reply's ids and timings).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.middleware import Middleware
from starlette.types import Receive, Scope

from ghost.api import chat
from ghost.api.chat_fast_path import ChatFastPath, ChatRoute, StartedSend, chat_routes
from ghost.api.route_table import ROUTES, RouteTable
from ghost.api.route_entry import RouteEntry
from ghost.app import create_app
from ghost.config import Settings
from ghost.testing.fake_upstream import FakeUpstream
from ghost.testing.inprocess import InProcessServer
from ghost.testing.server import TEST_KEY

CHAT_PATHS = ["/v1/chat/completions", "/chat", "/api/chat", "/api/generate", "/v1/messages",
              "/v1/messages/count_tokens"]
MAX_BODY = 3000
# Headers that differ between any two replies, whoever serves them.
VOLATILE = {"date", "x-request-id", "server-timing", "content-length", "x-ghost-session"}


class CountingFastPath(ChatFastPath):
    """The fast path, counting the requests it served (so a test knows it was taken)."""

    served = 0

    async def serve(self, chat: ChatRoute, scope: Scope, receive: Receive, send: StartedSend) -> None:
        CountingFastPath.served += 1
        await super().serve(chat, scope, receive, send)


def _app(home: Path, upstream: FakeUpstream, *, fast: bool) -> Any:
    settings = Settings(home=home, upstream_url=upstream.url, api_key=TEST_KEY, max_request_bytes=MAX_BODY,
                        cors_origins="http://allowed.example")
    app = create_app(settings)
    entry = app.user_middleware[-1]
    assert entry.cls is RouteEntry
    routes = entry.kwargs["chat"].routes if fast else {}
    app.user_middleware[-1] = Middleware(RouteEntry, body_limit=entry.kwargs["body_limit"],
                                         chat=CountingFastPath(routes) if fast else ChatFastPath({}))
    return app


@pytest.fixture(scope="module")
def pair(upstream: FakeUpstream,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    fast_app = _app(tmp_path_factory.mktemp("fast"), upstream, fast=True)
    routed_app = _app(tmp_path_factory.mktemp("routed"), upstream, fast=False)
    with InProcessServer(fast_app) as fast, InProcessServer(routed_app) as routed, \
            httpx.Client(base_url=fast.url, timeout=60) as fast_http, \
            httpx.Client(base_url=routed.url, timeout=60) as routed_http:
        yield fast_http, routed_http


def test_the_fast_path_takes_the_chat_routes_and_no_other() -> None:
    app = create_app(Settings(api_key=TEST_KEY))
    assert sorted(app.user_middleware[-1].kwargs["chat"].routes) == sorted(CHAT_PATHS)


def test_routes_under_an_include_that_adds_a_dependency_are_left_to_fastapi() -> None:
    settings = Settings(api_key=TEST_KEY)
    table = RouteTable(ROUTES, settings)
    plain, guarded = FastAPI(), FastAPI()
    plain.include_router(chat.router)
    guarded.include_router(chat.router, dependencies=[Depends(lambda: None)])
    assert sorted(chat_routes(plain.router.routes, table, settings)) == sorted(CHAT_PATHS[:4])
    assert chat_routes(guarded.router.routes, table, settings) == {}


def _comparable(response: httpx.Response) -> tuple[int, dict[str, str], Any]:
    headers = {name: value for name, value in response.headers.items() if name not in VOLATILE}
    body: Any = response.content
    if response.headers.get("content-type", "").startswith("application/json") and response.content:
        body = _without_volatile(response.json())
    elif response.headers.get("content-type", "").startswith(("text/event-stream", "application/x-ndjson")):
        body = len(response.content) > 0  # ids and timestamps in every chunk; both stream something
    return response.status_code, headers, body


def _without_volatile(payload: Any) -> Any:
    if isinstance(payload, dict):
        return {k: _without_volatile(v) for k, v in payload.items()
                if k not in {"id", "created", "created_at", "total_duration", "eval_duration", "prompt_eval_duration",
                             "load_duration", "system_fingerprint"}}
    if isinstance(payload, list):
        return [_without_volatile(item) for item in payload]
    return payload


def same_answer(pair: tuple[httpx.Client, httpx.Client], method: str, path: str, **kwargs: Any) -> httpx.Response:
    """Send one request to both Ghosts; assert the answers match; return the fast path's."""
    fast_http, routed_http = pair
    fast, routed = (http.request(method, path, **_fresh(kwargs)) for http in (fast_http, routed_http))
    assert _comparable(fast) == _comparable(routed), (method, path, fast.text, routed.text)
    return fast


def _fresh(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A list as `content` is sent chunked, without a length: a new iterator for each request."""
    content = kwargs.get("content")
    return {**kwargs, "content": iter(content)} if isinstance(content, list) else kwargs


KEY = {"X-Ghost-Key": TEST_KEY}
TURN = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
GENERATE = {"model": "fake-model", "prompt": "hi"}


def _body(path: str, stream: bool | None = None) -> dict[str, Any]:
    if path == "/v1/messages/count_tokens":  # counts, never streams
        return {key: TURN[key] for key in ("model", "messages")}
    body = GENERATE if path == "/api/generate" else TURN
    return body if stream is None else {**body, "stream": stream}


ERRORS = [
    ("no key", {}, lambda path: {"json": _body(path)}),
    ("wrong X-Ghost-Key", {"X-Ghost-Key": "wrong"}, lambda path: {"json": _body(path)}),
    ("wrong Bearer", {"Authorization": "Bearer wrong"}, lambda path: {"json": _body(path)}),
    ("wrong x-api-key", {"x-api-key": "wrong"}, lambda path: {"json": _body(path)}),
    ("no key, bad JSON", {}, lambda path: {"content": b"{not json"}),
    ("bad JSON", KEY, lambda path: {"content": b"{not json"}),
    ("empty body", KEY, lambda path: {"content": b""}),
    ("not an object", KEY, lambda path: {"json": [1, 2]}),
    ("invalid fields", KEY, lambda path: {"json": {"model": 3, "messages": "no"}}),
    ("declared too large", KEY, lambda path: {"content": b"x" * (MAX_BODY + 1)}),
    ("streamed too large", KEY, lambda path: {"content": [b"x" * 1000] * 4}),
    ("too large, no key", {}, lambda path: {"content": b"x" * (MAX_BODY + 1)}),
    ("deep JSON", KEY, lambda path: {"content": b"[" * 200 + b"]" * 200}),
]


@pytest.mark.parametrize("path", CHAT_PATHS)
@pytest.mark.parametrize("case", ERRORS, ids=[case[0] for case in ERRORS])
def test_errors_match_the_routed_answer(pair: tuple[httpx.Client, httpx.Client], path: str, case: Any) -> None:
    _, headers, body = case
    before = CountingFastPath.served
    answer = same_answer(pair, "POST", path, headers={"content-type": "application/json", **headers}, **body(path))
    assert answer.status_code >= 400
    assert CountingFastPath.served == before + (0 if case[0].startswith(("declared", "too large")) else 1)


OTHER_WAYS = [
    ("GET", "", {}), ("HEAD", "", {}), ("PUT", "", {}), ("DELETE", "", {}),
    ("POST", "/", {}), ("POST", "?stream=true&x=1", {}),
    ("OPTIONS", "", {"Origin": "http://allowed.example", "Access-Control-Request-Method": "POST"}),
    ("OPTIONS", "", {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}),
    ("POST", "", {"Origin": "http://evil.example"}),
    ("POST", "", {"Host": "rebind.evil.example"}),
    ("POST", "", {"Host": "[::1]evil.example"}),
]


@pytest.mark.parametrize("path", CHAT_PATHS)
@pytest.mark.parametrize("method,suffix,headers", OTHER_WAYS, ids=[f"{m} {s} {h}" for m, s, h in OTHER_WAYS])
def test_other_methods_variants_and_refusals_match(pair: tuple[httpx.Client, httpx.Client], path: str, method: str,
                                                   suffix: str, headers: dict[str, str]) -> None:
    content = json.dumps(_body(path)).encode() if method in ("POST", "PUT") else None
    same_answer(pair, method, path + suffix, headers={**KEY, **headers}, content=content)


@pytest.mark.parametrize("path", CHAT_PATHS)
@pytest.mark.parametrize("stream", [False, True])
def test_turns_match(pair: tuple[httpx.Client, httpx.Client], path: str, stream: bool) -> None:
    before = CountingFastPath.served
    headers = {**KEY, "Origin": "http://allowed.example", "X-Request-ID": "same-id-1"}
    answer = same_answer(pair, "POST", path, headers=headers, json=_body(path, stream))
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-request-id"] == "same-id-1"
    assert answer.headers["access-control-allow-origin"] == "http://allowed.example"
    assert CountingFastPath.served == before + 1


def test_a_users_key_acts_on_the_users_workspace(pair: tuple[httpx.Client, httpx.Client]) -> None:
    keys = []
    for http in pair:
        made = http.post("/api/users", json={"name": "fastuser"}, headers=KEY)
        assert made.status_code == 201, made.text
        keys.append(made.json()["key"])
    fast_http, routed_http = pair
    fast = fast_http.post("/v1/chat/completions", json=TURN, headers={"Authorization": f"Bearer {keys[0]}"})
    routed = routed_http.post("/v1/chat/completions", json=TURN, headers={"Authorization": f"Bearer {keys[1]}"})
    assert _comparable(fast) == _comparable(routed)
    assert fast.status_code == 200, fast.text
    assert fast_http.post("/v1/chat/completions", json=TURN, headers={"Authorization": f"Bearer {keys[1]}"}) \
        .status_code == 401  # the other Ghost's key is not this one's (and the other way round)
    assert routed_http.post("/v1/chat/completions", json=TURN, headers={"Authorization": f"Bearer {keys[0]}"}) \
        .status_code == 401


def _chat_counts(http: httpx.Client) -> list[str]:
    text = http.get("/metrics", headers=KEY).text
    return sorted(line for line in text.splitlines()
                  if line.startswith("ghost_http_requests_total") and any(f'"{path}"' in line for path in CHAT_PATHS))


def test_the_metrics_name_the_route_alike(pair: tuple[httpx.Client, httpx.Client]) -> None:
    # Run last: both Ghosts have had the same requests; the counts by route template must agree.
    fast, routed = (_chat_counts(http) for http in pair)
    assert fast == routed
    assert any('route="/v1/chat/completions"' in line and 'status="200"' in line for line in fast), fast
