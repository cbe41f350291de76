"""The HTTP boundary, attacked over HTTP against a real Ghost (issue 12).

Web pages (CORS, DNS rebinding), forged request targets (SSRF through the proxy), a misbehaving
upstream, oversized and deeply nested bodies, a run forking many large processes, a full disk and
slow clients. No response in this file may be a 500.
"""

from __future__ import annotations

import contextlib
import io
import json
import select
import socket
import stat
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ghost.api.boundary import HostRule
from ghost.api.error_shape import is_ollama_path
from ghost.config import Settings
from ghost.testing.fake_upstream import FakeUpstream, Reply
from capabilities import require
from ghost.testing.server import TEST_KEY, GhostServer, clean_env, free_port

STRONG_KEY = "a-strong-key-for-the-boundary-tests-0123"
FOREIGN_HOSTS = ["rebind.evil.example", "rebind.evil.example:11435", "localhost.evil.example", "10.0.0.1.nip.io"]
LOCAL_HOSTS = ["localhost", "127.0.0.1", "[::1]", "app.localhost", "127.0.0.2"]
FOREIGN_ORIGINS = ["http://evil.example", "null", "http://localhost.evil.example", "https://127.0.0.1.evil.example",
                   "http://localhost:3000.evil.example", "file://"]
LOCAL_ORIGINS = ["http://localhost", "http://localhost:3000", "http://127.0.0.1:8080", "http://[::1]:5173",
                 "https://localhost:8443"]

# Every kind of route: unauthenticated info, authed Ghost routes, JSON, multipart, the proxy.
ROUTES = [
    ("GET", "/", None), ("HEAD", "/", None), ("GET", "/api/version", None), ("GET", "/api/tags", None),
    ("POST", "/api/show", {}), ("GET", "/v1/models", None), ("GET", "/api/health", None),
    ("POST", "/api/chat", {"messages": [{"role": "user", "content": "hi"}], "stream": False}),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/api/generate", {"prompt": "hi", "stream": False}),
    ("POST", "/api/workspace/save", None), ("GET", "/api/sessions", None),
    ("GET", "/api/download/nothing.txt", None), ("GET", "/echo/proxied", None), ("POST", "/echo/proxied", {}),
    ("OPTIONS", "/v1/chat/completions", None), ("GET", "/docs", None), ("GET", "/openapi.json", None),
]


def assert_error(response: httpx.Response, status: int, error_type: str | None = None) -> dict:
    """The error in the shape the route's clients read: Ollama's `{"error": "..."}` on Ollama
    routes (which carries no type), Ghost's `{"error": {"message", "type"}}` everywhere else."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    if is_ollama_path(response.request.url.path):  # Ollama's routes answer Ollama's shape (issue 15)
        body = response.json()
        assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
        return {"message": body["error"]}
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    if error_type:
        assert error["type"] == error_type, error
    return error


def send(http: httpx.Client, method: str, path: str, body: object, headers: dict[str, str]) -> httpx.Response:
    return http.request(method, path, json=body, headers=headers) if body is not None else \
        http.request(method, path, headers=headers)


# --- the generated key --------------------------------------------------------------------------


def ghost_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ghost", *args], env=clean_env(env), capture_output=True,
                          text=True, timeout=120)


def test_first_start_generates_a_private_key_that_clients_find(upstream: FakeUpstream, tmp_path: Path) -> None:
    home = tmp_path / "home"
    with GhostServer("--upstream-url", upstream.url, api_key=None, home=home) as server:
        key_file = home / "api_key"
        key = server.generated_key()
        assert key and len(key) >= 32
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert key in server.log()  # printed once, at the start that made it
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.get("/v1/models").status_code == 401
            assert http.get("/v1/models", headers={"X-Ghost-Key": "ghost-secret-123"}).status_code == 401
            assert http.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        printed = ghost_cli("key", "--home", str(home))
        assert printed.returncode == 0 and printed.stdout.strip() == key
        upstream.script(Reply(content="answered with the generated key"))
        chat = ghost_cli("chat", "--url", server.url, "--home", str(home), "say something")
        assert chat.returncode == 0, chat.stderr
        assert "answered with the generated key" in chat.stdout
        assert upstream.chat_requests()  # the question did reach the model
    with GhostServer("--upstream-url", upstream.url, api_key=None, home=home) as again:
        assert again.generated_key() == key  # kept across restarts
        assert httpx.get(again.url + "/v1/models", headers={"X-Ghost-Key": key}).status_code == 200


def test_client_without_a_key_gets_a_clear_401(upstream: FakeUpstream, ghost: GhostServer, tmp_path: Path) -> None:
    result = ghost_cli("chat", "--url", ghost.url, "--home", str(tmp_path), "hello")
    assert result.returncode == 1
    assert "refused the API key" in result.stderr and "ghost key" in result.stderr


def test_ghost_key_without_a_generated_key_says_so(tmp_path: Path) -> None:
    result = ghost_cli("key", "--home", str(tmp_path))
    assert result.returncode == 1 and "ghost serve" in result.stderr


@pytest.mark.parametrize("args,message", [
    (["--api-key", ""], "--no-auth"),
    (["--no-auth", "--cors-origins", "*"], "refusing --cors-origins '*'"),
    (["--api-key", "ghost-secret-123", "--cors-origins", "*"], "refusing --cors-origins '*'"),
    (["--api-key", "short", "--cors-origins", "http://a.example,*"], "refusing --cors-origins '*'"),
    (["--host", "0.0.0.0", "--no-auth"], "refusing to bind 0.0.0.0 with no auth"),
    (["--no-auth", "--api-key", STRONG_KEY], "contradict"),
])
def test_unsafe_auth_settings_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    result = ghost_cli("serve", "--port", str(free_port()), "--home", str(tmp_path), *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def keyless(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    with GhostServer("--upstream-url", upstream.url, api_key="", home=tmp_path_factory.mktemp("noauth")) as server:
        yield server


def test_no_auth_warns_loudly_and_still_checks_host_and_origin(keyless: GhostServer, upstream: FakeUpstream) -> None:
    assert "NO AUTH" in keyless.log()
    assert not (keyless.home / "api_key").exists()  # nothing generated: auth is off on purpose
    with httpx.Client(base_url=keyless.url, timeout=30) as http:
        assert http.get("/v1/models").status_code == 200
        assert_error(http.get("/v1/models", headers={"Host": "rebind.evil.example"}), 403, "forbidden")
        refused = http.post("/api/workspace/save", content=b"{}",
                            headers={"Origin": "http://evil.example", "Content-Type": "text/plain"})
        assert_error(refused, 403, "forbidden")
        assert http.post("/echo/x", headers={"Origin": "http://evil.example"}).status_code == 403
    assert upstream.requests == []


# --- browsers: CORS ---------------------------------------------------------------------------------


def preflight(http: httpx.Client, origin: str, path: str = "/v1/chat/completions") -> httpx.Response:
    return http.options(path, headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                       "Access-Control-Request-Headers": "x-ghost-key, content-type"})


@pytest.mark.parametrize("origin", LOCAL_ORIGINS)
def test_local_origins_pass_preflight_and_read_replies(anon: httpx.Client, client: httpx.Client, origin: str) -> None:
    response = preflight(anon, origin)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == origin
    assert "x-ghost-key" in response.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in response.headers
    reply = client.get("/v1/models", headers={"Origin": origin})
    assert reply.status_code == 200
    assert reply.headers["access-control-allow-origin"] == origin
    assert "x-request-id" in reply.headers["access-control-expose-headers"].lower()


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat", "/echo/x", "/"])
def test_foreign_origins_fail_preflight(anon: httpx.Client, upstream: FakeUpstream, origin: str, path: str) -> None:
    response = preflight(anon, origin, path)
    assert_error(response, 403, "forbidden")
    assert "access-control-allow-origin" not in response.headers
    assert upstream.requests == []


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS[:3])
def test_foreign_simple_request_is_refused_not_run(client: httpx.Client, ghost: GhostServer, upstream: FakeUpstream,
                                                   origin: str) -> None:
    # A text/plain POST needs no preflight: the browser sends it and only hides the answer. It
    # must not run at all, even with the right key (a page could have it from a leaked config).
    headers = {"Origin": origin, "Content-Type": "text/plain"}
    body = json.dumps({"messages": [{"role": "user", "content": "run code"}], "stream": False})
    for path in ("/api/chat", "/v1/chat/completions", "/api/workspace/save"):
        response = client.post(path, content=body, headers=headers)
        assert_error(response, 403, "forbidden")
        assert "access-control-allow-origin" not in response.headers
    assert upstream.chat_requests() == []


def test_local_simple_request_runs(client: httpx.Client, upstream: FakeUpstream) -> None:
    response = client.post("/api/workspace/save", content=b"{}",
                           headers={"Origin": "http://127.0.0.1:8080", "Content-Type": "text/plain"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://127.0.0.1:8080"


def test_cors_origins_setting_replaces_the_local_default(upstream: FakeUpstream, tmp_path: Path) -> None:
    with GhostServer("--upstream-url", upstream.url, "--cors-origins", "https://ui.example, http://other.example:8080",
                     home=tmp_path) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        for origin in ("https://ui.example", "http://other.example:8080"):
            response = preflight(http, origin)
            assert response.status_code == 200 and response.headers["access-control-allow-origin"] == origin
        assert_error(preflight(http, "http://localhost:3000"), 403, "forbidden")
        assert_error(preflight(http, "https://ui.example.evil"), 403, "forbidden")


def test_cors_wildcard_only_with_a_strong_key(upstream: FakeUpstream, tmp_path: Path) -> None:
    with GhostServer("--upstream-url", upstream.url, "--cors-origins", "*", api_key=STRONG_KEY,
                     home=tmp_path) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        response = preflight(http, "http://anywhere.example")
        assert response.status_code == 200 and response.headers["access-control-allow-origin"] == "*"
        assert http.get("/v1/models", headers={"Origin": "http://anywhere.example"}).status_code == 401


# --- DNS rebinding: the Host header ------------------------------------------------------------------


@pytest.mark.parametrize("host", FOREIGN_HOSTS)
@pytest.mark.parametrize("method,path,body", ROUTES)
def test_foreign_host_is_403_on_every_route(client: httpx.Client, upstream: FakeUpstream, host: str, method: str,
                                            path: str, body: object) -> None:
    response = send(client, method, path, body, {"Host": host})
    assert response.status_code == 403, response.text[:300]
    if method != "HEAD":
        assert_error(response, 403, "forbidden")
    assert upstream.requests == []  # neither the proxy nor a chat turn went out


@pytest.mark.parametrize("host", LOCAL_HOSTS)
def test_loopback_hosts_are_served(client: httpx.Client, ghost: GhostServer, host: str) -> None:
    for value in (host, f"{host}:{ghost.port}"):
        assert client.get("/api/version", headers={"Host": value}).status_code == 200
        assert client.get("/echo/host", headers={"Host": value}).status_code == 200


def test_allowed_hosts_setting(upstream: FakeUpstream, tmp_path: Path) -> None:
    with GhostServer("--upstream-url", upstream.url, "--allowed-hosts", "ghost.lan,.home.example",
                     home=tmp_path) as server, httpx.Client(base_url=server.url, headers=server.headers) as http:
        for host in ("ghost.lan", "GHOST.LAN:11435", "box.home.example"):
            assert http.get("/v1/models", headers={"Host": host}).status_code == 200, host
        for host in ("ghost.lan.evil.example", "home.example.evil", "evil.example"):
            assert_error(http.get("/v1/models", headers={"Host": host}), 403, "forbidden")


def test_the_refusal_does_not_echo_a_huge_host(client: httpx.Client) -> None:
    foreign = ".".join(["a" * 60] * 4) + ".example"  # a valid authority, refused as foreign
    for host, status, error_type in ((foreign, 403, "forbidden"), ("a" * 6000 + ".example", 400, None)):
        response = client.get("/api/version", headers={"Host": host})
        assert_error(response, status, error_type)
        assert len(response.content) < 600


MALFORMED_HOSTS = ["[::1]evil.example", "[::1]:80evil.example", "[::1].evil.example", "localhost evil.example",
                   "localhost:80:80", "localhost:http", "localhost/evil", "user@localhost", "localhost,evil.example",
                   "[127.0.0.1]", "[::1", "::1]", "[evil.example]", "127.0.0.1:99999x", "local\thost",
                   "localhost:", "-localhost", "a..localhost"]


def raw_request(port: int, headers: list[tuple[str, str]], path: str = "/api/version") -> bytes:
    head = f"GET {path} HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers)
    return raw_exchange(port, (head + "Connection: close\r\n\r\n").encode("latin-1"))


def message_of(reply: bytes, path: str) -> str:
    """The error message of a raw reply, in Ollama's shape or Ghost's (as the path answers)."""
    body = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    return body["error"] if is_ollama_path(path) else body["error"]["message"]


@pytest.mark.parametrize("host", MALFORMED_HOSTS)
def test_a_host_that_is_not_one_authority_is_400(ghost: GhostServer, upstream: FakeUpstream, host: str) -> None:
    for path in ("/api/version", "/echo/proxied", "/api/tags"):
        reply = raw_request(ghost.port, [("Host", host), ("X-Ghost-Key", TEST_KEY)], path)
        assert status_of(reply) == 400, (host, path, reply[:300])
        assert "valid authority" in message_of(reply, path), reply
    assert upstream.requests == []


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:1", "127.0.0.1:65535", "[::1]", "[::1]:80", "[0:0::1]:8",
                                  "app.localhost", "localhost."])
def test_every_authority_form_of_a_local_host_is_served(ghost: GhostServer, host: str) -> None:
    assert status_of(raw_request(ghost.port, [("Host", host)])) == 200


@pytest.mark.parametrize("name,first,second", [
    ("Host", "localhost", "evil.example"), ("Host", "localhost", "localhost"), ("Host", "evil.example", "localhost"),
    ("Origin", "http://localhost", "http://evil.example"), ("Origin", "http://evil.example", "http://localhost"),
    ("Origin", "http://localhost", "http://localhost")])
def test_two_host_or_two_origin_headers_are_400(ghost: GhostServer, upstream: FakeUpstream, name: str, first: str,
                                                second: str) -> None:
    base = [] if name == "Host" else [("Host", "localhost")]
    for path in ("/api/version", "/echo/proxied", "/v1/models"):
        headers = [*base, (name, first), ("X-Ghost-Key", TEST_KEY), (name, second)]
        reply = raw_request(ghost.port, headers, path)
        assert status_of(reply) == 400, (headers, reply[:300])
        assert f"more than one {name} header" in message_of(reply, path), reply
    assert upstream.requests == []


# --- forged request targets: no SSRF through the proxy -------------------------------------------------


class Listener:
    """A TCP server on another loopback port, counting every connection it gets."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                data = b""
                try:
                    data = conn.recv(65536)
                except OSError:
                    pass
                self.received.append(data)  # every connection counts, even one that sent nothing
                with contextlib.suppress(OSError):
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nSECRET")

    def drain(self) -> list[bytes]:
        """What came before a marker the test sends now: connections are taken one at a time in the
        order they were made, so once the marker is answered, anything sent before it is counted."""
        marker = b"GET /marker HTTP/1.1\r\nHost: x\r\n\r\n"
        assert b"SECRET" in raw_exchange(self.port, marker)
        assert self.received[-1] == marker
        return self.received[:-1]

    def close(self) -> None:
        self.sock.close()


def raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def odd_targets(port: int) -> list[str]:
    return [f"*@127.0.0.1:{port}/admin", "*", "*x", f"http://127.0.0.1:{port}/admin", f"//127.0.0.1:{port}/admin",
            f"@127.0.0.1:{port}/admin", f"127.0.0.1:{port}", f"*@127.0.0.1:{port}", f"https://127.0.0.1:{port}/",
            f"/\\127.0.0.1:{port}/admin"]


def test_odd_request_targets_never_reach_another_host(ghost: GhostServer) -> None:
    listener = Listener()
    try:
        direct = raw_exchange(listener.port, b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"SECRET" in direct and len(listener.received) == 1  # the probe sees a request
        listener.received.clear()
        for target in odd_targets(listener.port):
            for method, body in (("GET", b""), ("POST", b'{"a": 1}')):
                head = (f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{ghost.port}\r\nX-Ghost-Key: {TEST_KEY}\r\n"
                        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
                reply = raw_exchange(ghost.port, head + body)
                # An absolute-form target is served by its path, here (RFC 9112 3.2.2); all else: 400.
                expected = (200, 404, 405) if target.startswith(("http://", "https://")) else (400,)
                assert status_of(reply) in expected, (target, reply[:300])  # never 500, never relayed
                assert b"SECRET" not in reply
        assert listener.drain() == []
    finally:
        listener.close()


def test_absolute_form_target_goes_to_the_upstream_only(ghost: GhostServer, upstream: FakeUpstream) -> None:
    # httptools keeps only the path of an absolute-form target: it must land on the upstream.
    listener = Listener()
    try:
        head = (f"GET http://127.0.0.1:{listener.port}/echo/abs HTTP/1.1\r\nHost: 127.0.0.1:{ghost.port}\r\n"
                f"X-Ghost-Key: {TEST_KEY}\r\nConnection: close\r\n\r\n").encode()
        reply = raw_exchange(ghost.port, head)
        assert status_of(reply) in (200, 400), reply[:300]
        assert listener.drain() == []
        if status_of(reply) == 200:
            assert [r["path"] for r in upstream.requests] == ["/echo/abs"]
    finally:
        listener.close()


# --- a misbehaving upstream -----------------------------------------------------------------------------


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def rogue() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def bounded(rogue: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    # No whole-turn output budget (it would end a content flood first, with a note): these tests
    # are about the per-reply bounds that also hold where that budget is off.
    with GhostServer("--upstream-url", rogue.url, "--max-turn-output-tokens", "0",
                     home=tmp_path_factory.mktemp("bounded")) as server:
        yield server


def chat(server: GhostServer, content: str = "go", *, stream: bool = False, session: str = "s1") -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", headers={**server.headers, "X-Ghost-Session": session},
                      json={"messages": [{"role": "user", "content": content}], "stream": stream}, timeout=120)


FLOODS = [
    ({"kind": "content", "size": 150 * 2**20}, "--upstream-max-reply-chars"),
    ({"kind": "arguments", "size": 200 * 2**20}, "--upstream-max-tool-call-chars"),
    ({"kind": "line", "size": 150 * 2**20}, "longer than"),
    ({"kind": "data_lines", "size": 150 * 2**20}, "one event's data longer than"),
    ({"kind": "calls", "size": 300}, "--upstream-max-tool-calls"),
]


def test_upstream_floods_are_cut_off_with_memory_bounded(bounded: GhostServer, rogue: FakeUpstream) -> None:
    pid = bounded.process.pid
    chat(bounded)  # warm: the first turn loads what every turn needs
    baseline = peak_rss_bytes(pid)
    for flood, setting in FLOODS:
        rogue.reset()
        rogue.script(Reply(flood=flood))
        response = chat(bounded)
        error = assert_error(response, 502, "upstream_reply_too_large")
        assert setting in error["message"]
        assert len(rogue.chat_requests()) == 1  # nothing was run, no second round
        rogue.script(Reply(flood=flood))
        with httpx.stream("POST", bounded.url + "/v1/chat/completions", headers=bounded.headers, timeout=120,
                          json={"messages": [{"role": "user", "content": "go"}], "stream": True}) as streamed:
            assert streamed.status_code in (200, 502)
            text = streamed.read().decode()
        if streamed.status_code == 200:  # the stream had started: the error comes in-band
            assert "event: error" in text and "upstream_reply_too_large" in text
            assert text.rstrip().endswith("data: [DONE]")
            assert len(text) < 8 * 2**20
    grown = peak_rss_bytes(pid) - baseline
    print(f"peak RSS grew by {grown / 2**20:.0f} MiB over a baseline of {baseline / 2**20:.0f} MiB")
    assert grown < 300 * 2**20
    stored = sum(p.stat().st_size for p in bounded.home.glob("ghost.db*"))
    assert stored < 20 * 2**20  # no flood reached the history


def tool_call_stream(name: object, arguments: object) -> str:
    call = {"index": 0, "id": "call_odd", "type": "function", "function": {"name": name, "arguments": arguments}}
    chunks = [{"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]},
              {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}]
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


DEEP = "[" * 50_000 + "]" * 50_000


@pytest.mark.parametrize("name,arguments,told", [
    (["scratchpad_list"], "{}", "tool name must be a string"),
    ({"n": "scratchpad_list"}, "{}", "tool name must be a string"),
    (7, "{}", "tool name must be a string"),
    ("scratchpad_list", [1, 2], "arguments must be a JSON object"),
    ("scratchpad_list", 5, "arguments must be a JSON object"),
    ("scratchpad_get", "not json {", "not valid JSON"),
    ("scratchpad_get", "[1, 2]", "object"),
    ("scratchpad_get", DEEP, "nest deeper than"),
    ("s" * 5000, "{}", "longer than"),
])
def test_malformed_tool_calls_become_tool_errors(bounded: GhostServer, rogue: FakeUpstream, name: object,
                                                 arguments: object, told: str) -> None:
    rogue.reset()
    rogue.script(Reply(raw_stream=tool_call_stream(name, arguments)), Reply(content="recovered"))
    response = chat(bounded)
    assert response.status_code == 200, response.text[:500]
    assert response.json()["choices"][0]["message"]["content"] == "recovered"
    second = rogue.chat_requests()[1]["body"]["messages"]
    tool_message = next(m for m in second if m["role"] == "tool")
    assert told in tool_message["content"], tool_message["content"][:300]


@pytest.mark.parametrize("chunk", [
    '{"choices": [{"index": 0, "delta": {"content": "x"}, "extra": ' + DEEP + '}]}',
    DEEP,
    '{"choices": 5}',
    '{"choices": [{"delta": {"tool_calls": [{"index": "x"}]}}]}',
    '{"choices": [{"delta": {"tool_calls": [7]}}]}',
])
def test_malformed_stream_chunks_are_502(bounded: GhostServer, rogue: FakeUpstream, chunk: str) -> None:
    rogue.reset()
    rogue.script(Reply(raw_stream=f"data: {chunk}\n\ndata: [DONE]\n\n"))
    response = chat(bounded)
    error = assert_error(response, 502)
    assert error["type"] in ("upstream_error", "upstream_reply_too_large")
    assert len(response.content) < 2000


def test_deep_non_streamed_upstream_reply_is_502(bounded: GhostServer, rogue: FakeUpstream) -> None:
    rogue.reset()
    rogue.script(Reply(body='{"choices": ' + DEEP + '}', content_type="application/json"))
    assert_error(chat(bounded), 502, "upstream_reply_too_large")


# --- request bodies ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method,path", [("POST", "/api/show"), ("GET", "/api/tags"), ("GET", "/api/version"),
                                         ("GET", "/")])
def test_unauthenticated_routes_take_only_small_bodies(anon: httpx.Client, method: str, path: str) -> None:
    big = json.dumps({"model": "m" * 20_000}).encode()
    assert_error(anon.request(method, path, content=big), 413, "request_too_large")
    assert anon.request(method, path, content=b" " * 1000).status_code == 200 or path == "/api/show"


def test_unauthenticated_body_without_a_length_is_counted(anon: httpx.Client) -> None:
    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it streams in
        yield b'{"model": "'
        for _ in range(64):
            yield b"m" * 16384

    assert_error(anon.post("/api/show", content=chunked()), 413, "request_too_large")


def test_unauthenticated_errors_do_not_echo_the_input(anon: httpx.Client) -> None:
    response = anon.post("/api/show", json={"model": "m" * 7000})
    assert_error(response, 404)
    assert len(response.content) < 500
    nested = anon.post("/api/show", json={"model": [[["x"] * 300]]})
    assert_error(nested, 404)
    assert len(nested.content) < 500


JSON_ROUTES = ["/api/chat", "/v1/chat/completions", "/chat", "/api/generate", "/api/workspace/save"]


@pytest.mark.parametrize("path", JSON_ROUTES)
@pytest.mark.parametrize("depth", [65, 5000, 200_000])
def test_deep_json_is_400_on_every_json_route(client: httpx.Client, upstream: FakeUpstream, path: str,
                                              depth: int) -> None:
    body = '{"messages": ' + "[" * depth + "]" * depth + ', "prompt": "x"}'
    response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    error = assert_error(response, 400, "invalid_request_error")
    assert "deeper than 64" in error["message"]
    assert upstream.chat_requests() == []


def test_deep_json_on_the_unauthenticated_route(anon: httpx.Client) -> None:
    body = '{"model": ' + "[" * 3000 + "]" * 3000 + "}"
    assert_error(anon.post("/api/show", content=body), 400, "invalid_request_error")
    unclosed = '{"model": ' + "{\"a\":" * 1000
    assert_error(anon.post("/api/show", content=unclosed), 400, "invalid_request_error")


def test_json_at_the_depth_limit_is_accepted(client: httpx.Client, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="fine"))
    deep_value = "[" * 50 + "]" * 50  # 64 with the envelope: body, messages, message, tool...
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": False,
            "tools": [{"type": "function", "function": {"name": "t", "parameters": {"type": "object",
                                                                                     "x": json.loads(deep_value)}}}]}
    assert client.post("/v1/chat/completions", json=body).status_code == 200


# --- memory per run: a cgroup for the whole run -------------------------------------------------------

FORK_HOGS = """
import os, time
kids = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:
        block = bytearray({mb} * 1024 * 1024)
        for i in range(0, len(block), 4096):
            block[i] = 1
        time.sleep(3)  # hold it while the others allocate theirs
        os._exit(0)
    kids.append(pid)
print("STATUSES", [os.waitpid(pid, 0)[1] for pid in kids])
"""


@pytest.fixture(scope="module")
def memory_capped(rogue: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    with GhostServer("--upstream-url", rogue.url, "--sandbox-run-memory-bytes", str(256 * 2**20),
                     "--sandbox-memory-bytes", str(1024 * 2**20), "--sandbox-timeout", "60",
                     home=tmp_path_factory.mktemp("memcap")) as server:
        yield server


def run_code(server: GhostServer, rogue: FakeUpstream, code: str) -> str:
    rogue.reset()
    rogue.script(Reply(tool_calls=[{"name": "execute", "arguments": {"code": code}}]), Reply(content="ok"))
    assert chat(server).status_code == 200
    messages = rogue.chat_requests()[1]["body"]["messages"]
    return next(m for m in messages if m["role"] == "tool")["content"]


def test_one_run_forking_large_processes_is_limited_as_a_whole(memory_capped: GhostServer, rogue: FakeUpstream) -> None:
    health = httpx.get(memory_capped.url + "/api/health", headers=memory_capped.headers, timeout=30).json()
    require("memory-cgroup", health["sandbox"].get("run_memory_limit") == "cgroup",
            "no writable memory cgroup on this machine: per-process limits only (said by /api/health)")
    small = run_code(memory_capped, rogue, FORK_HOGS.format(mb=20))
    assert "STATUSES [0, 0, 0, 0]" in small  # the probe: four processes that fit all finish
    big = run_code(memory_capped, rogue, FORK_HOGS.format(mb=150))  # 600 MB together, 150 MB each
    statuses = json.loads(big.split("STATUSES", 1)[1].splitlines()[0]) if "STATUSES" in big else None
    if statuses is None:  # the OOM killer may pick the parent too: then the run itself was killed
        assert "exit code 137" in big or "exit code -9" in big or "signal 9" in big, big[:500]
    else:  # at most one 150 MB child fits in 256 MB: the others were killed (SIGKILL: status 9)
        assert statuses.count(9) >= 2, big[:500]


def test_health_says_how_run_memory_is_bounded(client: httpx.Client) -> None:
    sandbox = client.get("/api/health").json()["sandbox"]
    assert sandbox["run_memory_limit"] in ("cgroup", "per-process")


# --- a full disk -------------------------------------------------------------------------------------


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], capture_output=True)
    require("tmpfs", result.returncode == 0, f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(path: Path) -> None:
    with open(path, "wb") as filler:
        try:
            while True:
                filler.write(b"\0" * 2**20)
                filler.flush()
        except OSError:
            pass


def test_turn_on_a_full_disk_still_delivers_its_reply(small_disk: Path, rogue: FakeUpstream, tmp_path: Path) -> None:
    # A window wide enough for the 3 MB question: this test is about the disk, not the window.
    server = GhostServer("--upstream-url", rogue.url, "--context-window", str(10**8), home=small_disk / "home")
    server.log_path = tmp_path / "server.log"  # the log must not live on the disk we fill
    with server:
        rogue.reset()
        assert chat(server, "before").status_code == 200  # the database exists and works
        fill(small_disk / "filler")
        big_question = "q" * (3 * 2**20)  # its history row needs pages the full disk cannot give
        rogue.script(Reply(content="still answered"))
        response = chat(server, big_question, session="full")
        assert response.status_code == 200, response.text[:300]
        assert response.json()["choices"][0]["message"]["content"] == "still answered"
        assert "not saved" in response.headers["x-ghost-warning"]
        rogue.script(Reply(content="streamed anyway"))
        streamed = chat(server, big_question, stream=True, session="full")
        assert streamed.status_code == 200
        assert "streamed anyway" in "".join(
            json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
            for line in streamed.text.splitlines() if line.startswith("data: {") and '"choices":[{' in line)
        assert ": ghost warning:" in streamed.text and streamed.text.rstrip().endswith("data: [DONE]")
        assert "not saved to the history" in server.log()
        sessions = httpx.get(server.url + "/api/sessions/full", headers=server.headers, timeout=30)
        assert sessions.status_code == 404  # nothing half-written
        (small_disk / "filler").unlink()  # space again: the next turn is saved (no transaction left open)
        rogue.script(Reply(content="saved again"))
        again = chat(server, "after", session="after")
        assert again.status_code == 200 and "x-ghost-warning" not in again.headers
        stored = httpx.get(server.url + "/api/sessions/after", headers=server.headers, timeout=30)
        assert stored.status_code == 200


def test_sqlite_disk_full_is_insufficient_storage(small_disk: Path) -> None:
    import sqlite3

    from ghost.errors import InsufficientStorage
    from ghost.store.db import migrate, transaction

    conn = sqlite3.connect(small_disk / "t.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    migrate(conn)
    fill(small_disk / "filler")
    with pytest.raises(InsufficientStorage):
        with transaction(conn) as c:
            c.execute("INSERT INTO scratchpad (workspace, key, value, updated_at) VALUES ('admin', 'x', ?, 0)",
                      ("z" * (4 * 2**20),))
    assert not conn.in_transaction  # nothing left open for the next writer
    (small_disk / "filler").unlink()
    with transaction(conn) as c:
        c.execute("INSERT INTO scratchpad (workspace, key, value, updated_at) VALUES ('admin', 'y', '[]', 0)")
    conn.close()


def test_upload_on_a_full_disk_is_507(small_disk: Path, rogue: FakeUpstream, tmp_path: Path) -> None:
    server = GhostServer("--upstream-url", rogue.url, home=small_disk / "home")
    server.log_path = tmp_path / "server.log"
    with server:
        fill(small_disk / "filler")
        response = httpx.post(server.url + "/api/upload", headers=server.headers, timeout=60,
                              files={"file": ("big.bin", io.BytesIO(b"x" * (2 * 2**20)))})
        assert_error(response, 507, "insufficient_storage")
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("session.json", json.dumps({"chat_history": [{"role": "user", "content": "h" * 2**20}]}))
        loaded = httpx.post(server.url + "/api/workspace/load", headers=server.headers, timeout=60,
                            files={"file": ("w.zip", archive.getvalue(), "application/zip")})
        assert_error(loaded, 507, "insufficient_storage")


# --- slow clients -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def impatient(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    with GhostServer("--upstream-url", upstream.url, "--header-timeout", "1", "--max-connections", "16",
                     home=tmp_path_factory.mktemp("impatient")) as server:
        yield server


def closed_by_peer(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def test_slow_header_client_is_disconnected(impatient: GhostServer) -> None:
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=10) as sock:
        sock.sendall(b"GET /api/version HTTP/1.1\r\nHost: localhost\r\n")
        sent = 0
        while sent < 200 and not closed_by_peer(sock):  # 200 lines at 0.2 s: a hang guard only
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            time.sleep(0.2)
        assert sent < 200, "the connection was never closed"
        assert sent >= 1  # it was open for a while: closed by the deadline, not refused at once
    assert "no complete request head" in impatient.log()
    # A client that sends its request at once is served as always, and kept alive.
    with httpx.Client(base_url=impatient.url, timeout=30) as http:
        assert http.get("/api/version").status_code == 200
        assert http.get("/api/version").status_code == 200


def test_open_connections_are_capped(impatient: GhostServer) -> None:
    idle = [socket.create_connection(("127.0.0.1", impatient.port), timeout=10) for _ in range(16)]
    try:
        response = httpx.get(impatient.url + "/api/version", timeout=30)
        assert response.status_code == 503  # uvicorn's answer past --max-connections
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the server notices the closed sockets
        if httpx.get(impatient.url + "/api/version", timeout=30).status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError("still refusing after the idle connections closed")


def read_response(sock: socket.socket) -> bytes:
    """One whole response (head and a Content-Length body) from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_keep_alive_connection_gets_a_new_deadline_per_request(impatient: GhostServer) -> None:
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=10) as sock:
        for _ in range(3):
            sock.sendall(b"GET /api/version HTTP/1.1\r\nHost: localhost\r\n\r\n")
            reply = read_response(sock)
            assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b'{"version":"0.1.24"}'), reply[:200]


def test_an_idle_kept_alive_connection_is_kept_and_a_slow_later_head_is_not(impatient: GhostServer) -> None:
    """Between requests only the idle-connection timeout (30 s) applies: a client reusing its
    connection after a pause longer than the header timeout (1 s here) is served, not reset. The
    head deadline starts again at the next request's first byte."""
    request = b"GET /api/version HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=10) as sock:
        sock.sendall(request)
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        time.sleep(3)  # idle three header timeouts: the old deadline, armed at the response, fired here
        assert not closed_by_peer(sock)
        sock.sendall(request)
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /api/version HTTP/1.1\r\n")  # a later request's head, begun and never ended
        sent = 0
        while sent < 200 and not closed_by_peer(sock):  # 200 lines at 0.2 s: a hang guard only
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            time.sleep(0.2)
        assert sent < 200, "a slow head on a kept-alive connection was never cut off"


def test_host_answers_are_remembered_within_a_bound() -> None:
    rule = HostRule(Settings())
    for _ in range(2):  # the remembered answer is the computed one
        assert rule.allows("localhost") and rule.allows("127.0.0.1") and rule.allows("::1")
        assert not rule.allows("rebind.evil.example") and not rule.allows("10.0.0.1")
    for n in range(HostRule.MAX_REMEMBERED * 2 + 5):
        assert not rule.allows(f"made-up-{n}.example")
        assert len(rule.allows) <= HostRule.MAX_REMEMBERED
    assert rule.allows("localhost") and not rule.allows("rebind.evil.example")
