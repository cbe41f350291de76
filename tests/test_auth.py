"""Auth: which routes need the key, how it may be sent, and when Ghost refuses to start."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ghost.api.error_shape import is_ollama_path
from ghost.testing.fake_upstream import FakeUpstream
from ghost.testing.server import TEST_KEY, GhostServer, clean_env, free_port, no_bundled_model

# Every route that needs the key: (method, path, JSON body or None). Adding a route is one line.
CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "stream": False}
AUTHED_ROUTES = [
    ("GET", "/v1/models", None),
    ("GET", "/api/health", None),
    ("GET", "/api/ps", None),  # what runs now: not for anyone who can reach the port
    ("POST", "/v1/chat/completions", CHAT),
    ("POST", "/chat", CHAT),
    ("POST", "/api/chat", CHAT),
    ("POST", "/api/generate", {"model": "fake-model", "prompt": "hi", "stream": False}),
    ("GET", "/api/sessions", None),
    ("POST", "/api/embed", {"model": "fake-model", "input": "hi"}),
    ("POST", "/api/embeddings", {"model": "fake-model", "prompt": "hi"}),
    ("POST", "/api/pull", {"model": "fake-model"}),
    ("POST", "/v1/messages", {"model": "fake-model", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/v1/messages/count_tokens", {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/echo/proxied", {"via": "catch-all proxy"}),
    ("PUT", "/echo/any/method?q=1", None),
]
# Every route that answers without a key.
OPEN_ROUTES = [
    ("GET", "/", None),
    ("HEAD", "/", None),
    ("GET", "/api/version", None),
    ("POST", "/api/show", {}),
    ("GET", "/api/tags", None),
]

BAD_CREDENTIALS = {
    "missing": {},
    "wrong x-ghost-key": {"X-Ghost-Key": "wrong-key"},
    "empty x-ghost-key": {"X-Ghost-Key": ""},
    "wrong bearer": {"Authorization": "Bearer wrong-key"},
    "bearer without token": {"Authorization": "Bearer"},
    "right key, wrong scheme": {"Authorization": f"Basic {TEST_KEY}"},
    "right key with a suffix": {"X-Ghost-Key": TEST_KEY + "x"},
    "prefix of the right key": {"Authorization": f"Bearer {TEST_KEY[:-1]}"},
    "wrong x-api-key": {"x-api-key": "wrong-key"},
    "empty x-api-key": {"x-api-key": ""},
}
GOOD_CREDENTIALS = {
    "x-ghost-key": {"X-Ghost-Key": TEST_KEY},
    "bearer": {"Authorization": f"Bearer {TEST_KEY}"},
    "lowercase bearer": {"authorization": f"bearer {TEST_KEY}"},
    "wrong x-ghost-key but right bearer": {"X-Ghost-Key": "nope", "Authorization": f"Bearer {TEST_KEY}"},
    "x-api-key (Anthropic's clients)": {"x-api-key": TEST_KEY},
    "wrong bearer but right x-api-key": {"Authorization": "Bearer nope", "x-api-key": TEST_KEY},
}


def call(http: httpx.Client, method: str, path: str, body: object, headers: dict[str, str]) -> httpx.Response:
    return http.request(method, path, json=body, headers=headers)


def assert_error(response: httpx.Response, status: int, error_type: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    if is_ollama_path(response.request.url.path):  # Ollama's routes: Ollama's `{"error": "..."}`
        assert isinstance(error, str) and error
        return
    assert error["type"] == error_type
    assert isinstance(error["message"], str) and error["message"]


@pytest.mark.parametrize("credentials", BAD_CREDENTIALS.values(), ids=BAD_CREDENTIALS.keys())
@pytest.mark.parametrize("method,path,body", AUTHED_ROUTES)
def test_authed_route_rejects_bad_credentials(anon: httpx.Client, upstream: FakeUpstream, method: str,
                                              path: str, body: object, credentials: dict[str, str]) -> None:
    response = call(anon, method, path, body, credentials)
    assert_error(response, 401, "authentication_error")
    assert TEST_KEY not in response.text
    # A rejected request never reaches the upstream.
    assert [r for r in upstream.requests if r["path"] != "/v1/models"] == []


@pytest.mark.parametrize("credentials", GOOD_CREDENTIALS.values(), ids=GOOD_CREDENTIALS.keys())
@pytest.mark.parametrize("method,path,body", AUTHED_ROUTES)
def test_authed_route_accepts_the_key(anon: httpx.Client, method: str, path: str, body: object,
                                      credentials: dict[str, str]) -> None:
    response = call(anon, method, path, body, credentials)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("method,path,body", OPEN_ROUTES)
def test_open_route_needs_no_key(anon: httpx.Client, method: str, path: str, body: object) -> None:
    assert call(anon, method, path, body, {}).status_code == 200
    # A wrong key on an open route is not an error either.
    assert call(anon, method, path, body, {"X-Ghost-Key": "wrong"}).status_code == 200


def test_failed_auth_is_logged_without_the_key(anon: httpx.Client, ghost: GhostServer) -> None:
    anon.get("/v1/models", headers={"X-Ghost-Key": "guess-one-two-three", "X-Request-ID": "auth-log-1"})
    deadline = time.monotonic() + 60
    while '"request_id": "auth-log-1"' not in ghost.log() and time.monotonic() < deadline:
        time.sleep(0.02)  # the access line is written as the request ends
    log = ghost.log()
    assert "auth failed: GET /v1/models" in log
    assert "guess-one-two-three" not in log


# --- servers with other keys -----------------------------------------------------------------


@pytest.fixture(scope="module")
def keyless(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    with GhostServer("--upstream-url", upstream.url, api_key="", home=tmp_path_factory.mktemp("keyless")) as server:
        yield server


@pytest.mark.parametrize("method,path,body", AUTHED_ROUTES)
def test_no_auth_flag_disables_auth(keyless: GhostServer, method: str, path: str, body: object) -> None:
    with httpx.Client(base_url=keyless.url, timeout=30) as http:
        assert call(http, method, path, body, {}).status_code == 200
        assert call(http, method, path, body, {"X-Ghost-Key": "anything"}).status_code == 200


def test_non_ascii_key_sent_as_utf8(upstream: FakeUpstream, tmp_path: Path) -> None:
    key = "schlüssel-ключ-🔑"
    with GhostServer("--upstream-url", upstream.url, api_key=key, home=tmp_path) as server:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            raw = key.encode("utf-8")
            assert http.get("/v1/models", headers={"X-Ghost-Key": raw}).status_code == 200
            assert http.get("/v1/models", headers={"Authorization": b"Bearer " + raw}).status_code == 200
            assert http.get("/v1/models", headers={"X-Ghost-Key": raw[:-1]}).status_code == 401


# --- refusing a public bind with a weak key ---------------------------------------------------


def serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "ghost", "serve", "--port", str(free_port()), "--home", str(tmp_path), *args]
    return subprocess.run(command, env=clean_env(), capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("key_args", [["--no-auth"], ["--api-key", "short-key"], ["--api-key", "ghost-secret-123"]],
                         ids=["no auth", "short key", "the seed's public key"])
def test_refuses_public_bind_with_weak_key(tmp_path: Path, key_args: list[str]) -> None:
    result = serve(tmp_path, "--host", "0.0.0.0", *key_args)
    assert result.returncode != 0
    assert "refusing to bind 0.0.0.0" in result.stderr
    assert "--api-key" in result.stderr and "--insecure" in result.stderr


def test_weak_key_from_environment_is_refused_too(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "ghost", "serve", "--port", str(free_port()), "--home", str(tmp_path)]
    env = clean_env({"GHOST_HOST": "0.0.0.0", "GHOST_API_KEY": "ghost-secret-123"})
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "refusing to bind 0.0.0.0 with the public default API key" in result.stderr


def test_insecure_public_bind_starts_and_warns(tmp_path: Path, upstream: FakeUpstream) -> None:
    with GhostServer("--host", "0.0.0.0", "--insecure", *no_bundled_model(upstream.url), api_key="ghost-secret-123",
                     home=tmp_path) as server:
        assert httpx.get(server.url + "/v1/models", headers={"X-Ghost-Key": "ghost-secret-123"}).status_code == 200
        assert httpx.get(server.url + "/v1/models").status_code == 401
        assert "WARNING" in server.log() and "INSECURE" in server.log()


def test_public_bind_with_strong_key_starts_quietly(tmp_path: Path, upstream: FakeUpstream) -> None:
    with GhostServer("--host", "0.0.0.0", *no_bundled_model(upstream.url), api_key="a-strong-key-0123456789",
                     home=tmp_path) as server:
        assert httpx.get(server.url + "/v1/models", headers={"X-Ghost-Key": "a-strong-key-0123456789"}).status_code == 200
        assert "INSECURE" not in server.log()


def test_loopback_bind_without_a_key_uses_the_generated_one(tmp_path: Path, upstream: FakeUpstream) -> None:
    with GhostServer(*no_bundled_model(upstream.url), api_key=None, home=tmp_path) as server:
        key = server.generated_key()
        assert key and len(key) >= 32
        assert httpx.get(server.url + "/v1/models", headers={"X-Ghost-Key": key}).status_code == 200
        assert httpx.get(server.url + "/v1/models", headers={"X-Ghost-Key": "ghost-secret-123"}).status_code == 401
        assert "INSECURE" not in server.log()
