"""The error shape, request ids and CORS, on every kind of failure."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from ghost.api.error_shape import is_ollama_path
from ghost.api.streaming import WatchedStreamingResponse
from ghost.app import create_app
from ghost.config import Settings
from ghost.testing.fake_upstream import FakeUpstream
from ghost.testing.inprocess import InProcessServer
from ghost.testing.server import TEST_KEY, GhostServer

FRESH_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
SMALL_JSON_LIMIT = 2048


def assert_error(response: httpx.Response, status: int, error_type: str | None = None) -> dict[str, str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert "Traceback" not in response.text and "<html" not in response.text.lower()
    assert FRESH_ID.fullmatch(response.headers["x-request-id"])
    if is_ollama_path(response.request.url.path):  # Ollama's routes answer Ollama's shape, same status
        body = response.json()
        assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
        return {"message": body["error"]}
    error = response.json()["error"]
    assert set(error) == {"message", "type"}
    assert isinstance(error["message"], str) and error["message"]
    if error_type is not None:
        assert error["type"] == error_type
    assert FRESH_ID.fullmatch(response.headers["x-request-id"])
    return error


# --- an in-process Ghost with routes that fail on purpose --------------------------------------


class Item(BaseModel):
    name: str
    count: int


def add_test_routes(app: FastAPI) -> None:
    """Routes no real Ghost has: they raise, so the error path can be seen from a client."""

    async def boom() -> None:
        raise RuntimeError("secret internal detail")

    async def boom_mid_stream() -> WatchedStreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"partial"
            raise RuntimeError("secret internal detail mid-stream")

        return WatchedStreamingResponse(body(), media_type="application/octet-stream")

    async def typed(item: Item) -> dict[str, str]:
        return {"name": item.name}

    app.router.add_api_route("/_test/boom", boom, methods=["GET"])
    app.router.add_api_route("/_test/boom-stream", boom_mid_stream, methods=["GET"])
    app.router.add_api_route("/_test/typed", typed, methods=["POST"])
    # Routes match in order and the catch-all proxy must stay last: move ours in front.
    added = app.router.routes[-3:]
    del app.router.routes[-3:]
    app.router.routes[0:0] = added


def in_process_ghost(settings: Settings) -> InProcessServer:
    """A real uvicorn on loopback serving `create_app` (plus test routes) in a thread."""
    app = create_app(settings)
    add_test_routes(app)
    return InProcessServer(app)


@pytest.fixture(scope="module")
def inproc(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    settings = Settings(home=tmp_path_factory.mktemp("inproc"), upstream_url=upstream.url, api_key=TEST_KEY)
    with in_process_ghost(settings) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def small(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    server = GhostServer("--upstream-url", upstream.url, "--max-request-bytes", str(SMALL_JSON_LIMIT),
                         "--proxy-max-body-bytes", "4096", home=tmp_path_factory.mktemp("small"))
    with server, httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


# --- request ids -------------------------------------------------------------------------------


@pytest.mark.parametrize("sent", ["abc", "A.b_c:d-9", "x" * 128, "chatcmpl-0123"])
def test_valid_request_id_is_echoed(client: httpx.Client, sent: str) -> None:
    assert client.get("/api/version", headers={"X-Request-ID": sent}).headers["x-request-id"] == sent
    assert client.get("/v1/models", headers={"X-Request-ID": sent}).headers["x-request-id"] == sent


@pytest.mark.parametrize("sent", ["", "has space", "x" * 129, "semi;colon", "slash/id", "ünï"])
def test_invalid_request_id_is_replaced(client: httpx.Client, sent: str) -> None:
    got = client.get("/api/version", headers={"X-Request-ID": sent.encode()}).headers["x-request-id"]
    assert got != sent and FRESH_ID.fullmatch(got)


def test_fresh_ids_differ(anon: httpx.Client) -> None:
    ids = {anon.get("/").headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


def test_request_id_reaches_the_upstream_and_the_access_log(client: httpx.Client, ghost: GhostServer,
                                                            upstream: FakeUpstream) -> None:
    client.get("/echo/with-id", headers={"X-Request-ID": "trace-me-42"})
    assert upstream.requests[-1]["headers"]["x-request-id"] == "trace-me-42"
    assert wait_for_log(ghost, '"request_id": "trace-me-42"')


def wait_for_log(server: GhostServer, text: str, timeout: float = 60.0) -> bool:
    """The access line is written as the request ends, which may be just after the client has its reply."""
    deadline = time.monotonic() + timeout
    while text not in server.log():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_request_id_on_every_error(anon: httpx.Client, small: httpx.Client, inproc: httpx.Client) -> None:
    cases = [
        (anon.get, "/v1/models", {}, 401),
        (anon.post, "/api/show", {"json": {"model": "nope"}}, 404),
        (anon.post, "/v1/models", {}, 405),
        (small.post, "/api/show", {"content": b"{" + b" " * SMALL_JSON_LIMIT + b"}"}, 413),
        (inproc.get, "/_test/boom", {}, 500),
    ]
    for method, path, kwargs, status in cases:
        response = method(path, headers={"X-Request-ID": f"err-{status}"}, **kwargs)
        assert response.status_code == status, (path, response.text)
        assert response.headers["x-request-id"] == f"err-{status}"
        assert_error(response, status)


# --- malformed bodies and validation ------------------------------------------------------------


@pytest.mark.parametrize("body", [b"{bad", b"{\"model\": ", b"\xff\xfe", b"nul\x00"])
def test_malformed_json_is_400(anon: httpx.Client, body: bytes) -> None:
    response = anon.post("/api/show", content=body, headers={"content-type": "application/json"})
    assert_error(response, 400, "invalid_request_error")


def test_fastapi_validation_errors_use_the_error_shape(inproc: httpx.Client) -> None:
    malformed = inproc.post("/_test/typed", content=b"{nope", headers={"content-type": "application/json"})
    assert_error(malformed, 400, "invalid_request_error")
    wrong_type = inproc.post("/_test/typed", json={"name": "a", "count": "many"})
    error = assert_error(wrong_type, 422, "invalid_request_error")
    assert "count" in error["message"]
    missing = inproc.post("/_test/typed", json={"name": "a"})
    assert "count" in assert_error(missing, 422, "invalid_request_error")["message"]
    assert inproc.post("/_test/typed", json={"name": "a", "count": 2}).json() == {"name": "a"}


def test_json_body_over_the_limit_is_413_declared_or_chunked(small: httpx.Client) -> None:
    big = b'{"model": "' + b"m" * SMALL_JSON_LIMIT + b'"}'
    assert_error(small.post("/api/show", content=big), 413, "request_too_large")

    def chunks() -> Iterator[bytes]:
        yield big[:1000]
        yield big[1000:]

    assert_error(small.post("/api/show", content=chunks()), 413, "request_too_large")
    # The server is fine afterwards.
    assert small.post("/api/show", json={}).status_code == 200


# --- methods -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method,path", [
    ("POST", "/v1/models"), ("DELETE", "/api/version"), ("PUT", "/"), ("POST", "/api/tags"),
    ("GET", "/api/show"), ("PATCH", "/api/health"), ("GET", "/v1/chat/completions"), ("PUT", "/api/chat"),
    ("PUT", "/api/sessions/some-id"),
])
def test_wrong_method_on_a_ghost_route_is_405_even_without_a_key(anon: httpx.Client, upstream: FakeUpstream,
                                                                 method: str, path: str) -> None:
    response = anon.request(method, path)
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"]
    assert method not in response.headers["allow"]
    assert upstream.requests == []  # never proxied


# --- unexpected exceptions -------------------------------------------------------------------------


def test_unexpected_exception_is_500_without_details(inproc: httpx.Client) -> None:
    response = inproc.get("/_test/boom", headers={"Origin": LOCAL_ORIGIN})
    error = assert_error(response, 500, "internal_error")
    assert "secret internal detail" not in response.text
    assert response.headers["x-request-id"] in error["message"]  # so a user can quote it
    assert response.headers["access-control-allow-origin"] == LOCAL_ORIGIN


def test_failure_after_the_response_started_aborts_the_connection(inproc: httpx.Client) -> None:
    # Headers and some bytes are out: the only honest signal left is an incomplete body.
    with pytest.raises(httpx.RemoteProtocolError):
        inproc.get("/_test/boom-stream")
    assert inproc.get("/api/version").status_code == 200


# --- CORS ------------------------------------------------------------------------------------------


LOCAL_ORIGIN = "http://localhost:3000"  # a page on this machine: allowed by default
FOREIGN_ORIGIN = "http://ui.example"  # any other page: refused (see tests/test_boundary.py)


def test_cors_preflight(anon: httpx.Client) -> None:
    response = anon.options("/v1/chat/completions", headers={
        "Origin": LOCAL_ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, x-ghost-key, content-type",
    })
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == LOCAL_ORIGIN
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "x-ghost-key" in allowed and "authorization" in allowed
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in response.headers
    assert FRESH_ID.fullmatch(response.headers["x-request-id"])


@pytest.mark.parametrize("path,status", [("/api/version", 200), ("/v1/models", 401), ("/echo/cors", 401)])
def test_cors_headers_and_exposed_request_id(anon: httpx.Client, path: str, status: int) -> None:
    response = anon.get(path, headers={"Origin": LOCAL_ORIGIN})
    assert response.status_code == status
    assert response.headers["access-control-allow-origin"] == LOCAL_ORIGIN
    assert "x-request-id" in response.headers["access-control-expose-headers"].lower()


def test_cors_on_proxied_reply(client: httpx.Client) -> None:
    response = client.get("/echo/cors", headers={"Origin": LOCAL_ORIGIN})
    assert response.status_code == 200
    assert response.headers.get_list("access-control-allow-origin") == [LOCAL_ORIGIN]


@pytest.mark.parametrize("path", ["/api/version", "/v1/models", "/echo/cors"])
def test_cors_refuses_a_foreign_origin(client: httpx.Client, upstream: FakeUpstream, path: str) -> None:
    upstream.reset()
    response = client.get(path, headers={"Origin": FOREIGN_ORIGIN})
    assert_error(response, 403, "forbidden")
    assert "access-control-allow-origin" not in response.headers
    assert upstream.requests == []  # refused before the proxy


# --- never HTML, never a traceback ---------------------------------------------------------------


def test_no_error_is_html_or_a_traceback(anon: httpx.Client, small: httpx.Client, inproc: httpx.Client) -> None:
    responses = [
        anon.get("/v1/models"),
        anon.get("/nothing/here"),
        anon.post("/api/show", content=b"]["),
        anon.post("/api/show", json={"model": 1}),
        anon.request("PROPFIND", "/api/version"),
        anon.get("/docs/../../etc/passwd", headers={"X-Ghost-Key": "x"}),
        small.post("/echo/x", content=b"z" * 5000),
        inproc.get("/_test/boom"),
        inproc.post("/_test/typed", content=b"[]", headers={"content-type": "application/json"}),
    ]
    for response in responses:
        assert response.status_code >= 400, response.request.url
        assert_error(response, response.status_code)
