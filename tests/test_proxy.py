"""The catch-all proxy, end to end: real Ghost, real fake upstream, real sockets."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest

from ghost.testing.fake_upstream import FakeUpstream
from ghost.testing.server import TEST_KEY, GhostServer, free_port

UPSTREAM_KEY = "upstream-only-key-987"
BODY_LIMIT = 4096
# Bounds how long a test may wait on a stream; a buffering proxy fails instead of hanging.
STREAM_TIMEOUT = httpx.Timeout(10.0)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunked(data: bytes, size: int = 1000) -> Iterator[bytes]:
    """A generator body, so httpx sends it with Transfer-Encoding: chunked (no Content-Length)."""
    for start in range(0, len(data), size):
        yield data[start:start + size]


@pytest.fixture(scope="module")
def tuned(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    """A Ghost with an upstream key and a small proxy body limit."""
    server = GhostServer("--upstream-url", upstream.url, "--upstream-api-key", UPSTREAM_KEY,
                         "--proxy-max-body-bytes", str(BODY_LIMIT), home=tmp_path_factory.mktemp("tuned"))
    with server:
        yield server


@pytest.fixture()
def tuned_client(tuned: GhostServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tuned.url, headers=tuned.headers, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def impatient(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    """A Ghost that gives up on upstream silence after 0.3 s."""
    server = GhostServer("--upstream-url", upstream.url, "--read-timeout", "0.3",
                         home=tmp_path_factory.mktemp("impatient"))
    with server:
        yield server


def assert_error(response: httpx.Response, status: int, error_type: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["type"] == error_type
    assert response.headers["x-request-id"]


def data_lines(response: httpx.Response) -> Iterator[str]:
    return (line for line in response.iter_lines() if line)


# --- bytes both ways ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_request_reaches_upstream_byte_exact(client: httpx.Client, upstream: FakeUpstream,
                                             method: str, framing: str) -> None:
    body = bytes(range(256)) * 512 + os.urandom(70_001)  # every byte value, odd size
    query = "a=1&b=two%20words&a=3&slash=%2F&empty=&utf=%E2%9C%93&plus=1+2"
    content = body if framing == "content-length" else chunked(body, 8191)
    response = client.request(method, f"/echo/dir%20x/file.bin?{query}", content=content)
    assert response.status_code == 200, response.text
    seen = response.json()
    assert (seen["method"], seen["path"], seen["query"]) == (method, "/echo/dir x/file.bin", query)
    assert (seen["size"], seen["sha256"]) == (len(body), sha(body))
    if framing == "content-length":
        assert seen["headers"]["content-length"] == str(len(body))
    else:
        assert seen["headers"]["transfer-encoding"] == "chunked"
    assert len(upstream.requests) == 1


def test_upstream_url_with_a_path_prefix(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> None:
    server = GhostServer("--upstream-url", upstream.url + "/echo/base/", home=tmp_path_factory.mktemp("prefix"))
    with server:
        seen = httpx.get(server.url + "/v1/embeddings?x=1", headers=server.headers).json()
    assert (seen["path"], seen["query"]) == ("/echo/base/v1/embeddings", "x=1")


def test_bodiless_requests_stay_bodiless(client: httpx.Client) -> None:
    seen = client.get("/echo/plain?x=1").json()
    assert seen["size"] == 0
    assert "content-length" not in seen["headers"] and "transfer-encoding" not in seen["headers"]


def test_empty_body_keeps_its_content_length(client: httpx.Client) -> None:
    seen = client.post("/echo/empty", content=b"").json()
    assert seen["size"] == 0 and seen["headers"]["content-length"] == "0"


def test_response_body_is_byte_exact(client: httpx.Client) -> None:
    size = 3 * 1024 * 1024 + 17
    response = client.get(f"/bytes/{size}")
    assert response.status_code == 200
    assert response.headers["content-length"] == str(size)
    assert response.content == b"x" * size


def test_head_is_proxied_without_a_body(client: httpx.Client) -> None:
    response = client.head("/bytes/1000")
    assert response.status_code == 200
    assert response.headers["content-length"] == "1000"
    assert response.content == b""


def test_upstream_status_and_body_pass_through(client: httpx.Client) -> None:
    response = client.get("/not/an/upstream/route")
    assert response.status_code == 404
    assert response.text == "Not Found"  # the upstream's own answer, untouched


def test_a_users_own_upstreams_error_text_is_relayed_as_it_is(client: httpx.Client) -> None:
    # Only the bundled model's error replies are scrubbed (tests/test_embedded.py): this is the user's server.
    traceback = 'Traceback (most recent call last):\n  File "/srv/app.py", line 3, in f\nValueError: x'
    response = client.post("/status/500", content=traceback, headers={"content-type": "text/plain"})
    assert response.status_code == 500 and response.text == traceback


# --- headers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("credentials", [{"X-Ghost-Key": TEST_KEY}, {"Authorization": f"Bearer {TEST_KEY}"},
                                         {"x-api-key": TEST_KEY}], ids=["x-ghost-key", "bearer", "x-api-key"])
def test_ghost_key_is_never_forwarded(ghost: GhostServer, tuned: GhostServer, credentials: dict[str, str]) -> None:
    plain = httpx.get(ghost.url + "/echo/k", headers=credentials).json()["headers"]
    assert "x-ghost-key" not in plain and "authorization" not in plain and "x-api-key" not in plain
    assert TEST_KEY not in json.dumps(plain)
    keyed = httpx.get(tuned.url + "/echo/k", headers=credentials).json()["headers"]
    assert "x-ghost-key" not in keyed
    assert keyed["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert TEST_KEY not in json.dumps(keyed)


def test_hop_by_hop_request_headers_are_dropped(client: httpx.Client) -> None:
    seen = client.get("/echo/hop", headers={
        "Connection": "keep-alive, X-Listed-Hop", "X-Listed-Hop": "1", "Keep-Alive": "timeout=5",
        "TE": "trailers", "Proxy-Authorization": "Basic abc", "Trailer": "x-t", "Proxy-Connection": "keep-alive",
        "X-Custom": "kept", "Cookie": "c=1",
    }).json()["headers"]
    for name in ("x-listed-hop", "keep-alive", "te", "proxy-authorization", "trailer", "proxy-connection"):
        assert name not in seen, name
    assert seen["x-custom"] == "kept" and seen["cookie"] == "c=1"


def test_repeated_request_headers_all_arrive(ghost: GhostServer, upstream: FakeUpstream) -> None:
    headers = [("X-Ghost-Key", TEST_KEY), ("X-Multi", "one"), ("X-Multi", "two")]
    httpx.get(ghost.url + "/echo/multi", headers=headers)
    seen = [value for name, value in upstream.requests[-1]["header_list"] if name == "x-multi"]
    assert seen == ["one", "two"]


def test_client_defaults_are_not_invented(ghost: GhostServer) -> None:
    with httpx.Client(base_url=ghost.url, headers=ghost.headers) as http:
        del http.headers["accept-encoding"]
        del http.headers["user-agent"]
        seen = http.get("/echo/defaults").json()["headers"]
    # An upstream that compresses must not send gzip to a client that never asked for it.
    assert "accept-encoding" not in seen
    assert "user-agent" not in seen


def test_hop_by_hop_response_headers_are_dropped(client: httpx.Client) -> None:
    response = client.get("/hop")
    assert response.text == "hop"
    for name in ("x-hop-listed", "keep-alive", "proxy-authenticate", "trailer"):
        assert name not in response.headers, name
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert response.headers["x-upstream"] == "fake"
    assert len(response.headers.get_list("date")) == 1
    assert len(response.headers.get_list("server")) <= 1
    assert len(response.headers.get_list("x-request-id")) == 1


# --- streaming -------------------------------------------------------------------------------------


def test_sse_reaches_the_client_before_the_upstream_finishes(ghost: GhostServer, upstream: FakeUpstream) -> None:
    with httpx.Client(base_url=ghost.url, headers=ghost.headers, timeout=STREAM_TIMEOUT) as http:
        with http.stream("GET", "/hold/incremental") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["x-accel-buffering"] == "no"
            assert response.headers["cache-control"] == "no-cache"
            lines = data_lines(response)
            assert next(lines) == "data: first"
            # The client has the first event while the upstream is still holding the stream open.
            assert upstream.hold_state("incremental") == "open"
            upstream.release("incremental")
            assert list(lines) == ["data: last"]
    assert upstream.wait_hold_state("incremental", "finished") == "finished"


def test_sse_events_arrive_in_order(client: httpx.Client) -> None:
    with client.stream("POST", "/sse/5?delay=0.01", json={"stream": True}) as response:
        assert list(data_lines(response)) == [f"data: {i}" for i in range(5)]


@pytest.mark.parametrize("pieces", [
    [b'{"model": "m", "stream": true}'],
    [b'{"model": "m", "str', b'eam"  :', b"  true, ", b'"x": 1}'],
], ids=["one chunk", "split across chunks"])
def test_stream_true_body_disables_buffering(client: httpx.Client, pieces: list[bytes]) -> None:
    response = client.post("/echo/stream", content=iter(pieces), headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["cache-control"] == "no-cache"
    assert response.json()["sha256"] == sha(b"".join(pieces))


def test_non_streaming_body_keeps_buffering_allowed(client: httpx.Client) -> None:
    response = client.post("/echo/plain", json={"model": "m", "stream": False})
    assert "x-accel-buffering" not in response.headers


def test_client_disconnect_mid_stream_closes_the_upstream(ghost: GhostServer, upstream: FakeUpstream) -> None:
    with httpx.Client(base_url=ghost.url, headers=ghost.headers, timeout=STREAM_TIMEOUT) as http:
        with http.stream("GET", "/hold/abandoned") as response:
            assert next(data_lines(response)) == "data: first"
        # Leaving the block closes the connection with the body unread.
    assert upstream.wait_hold_state("abandoned", "finished", "closed_early") == "closed_early"


def test_client_disconnect_before_upstream_answers_cancels_the_upstream_request(
        ghost: GhostServer, upstream: FakeUpstream) -> None:
    with httpx.Client(base_url=ghost.url, headers=ghost.headers, timeout=httpx.Timeout(10.0, read=0.3)) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.get("/hold/impatient-client?before=headers")
    assert upstream.wait_hold_state("impatient-client", "finished", "closed_early") == "closed_early"


def test_many_abandoned_streams_do_not_exhaust_the_pool(upstream: FakeUpstream, tmp_path_factory) -> None:
    server = GhostServer("--upstream-url", upstream.url, "--upstream-max-connections", "2",
                         home=tmp_path_factory.mktemp("pool"))
    with server, httpx.Client(base_url=server.url, headers=server.headers, timeout=STREAM_TIMEOUT) as http:
        for i in range(6):
            with http.stream("GET", f"/hold/pool-{i}") as response:
                assert next(data_lines(response)) == "data: first"
            assert upstream.wait_hold_state(f"pool-{i}", "closed_early") == "closed_early"
        assert http.get("/echo/after").status_code == 200


# --- upstream connections -------------------------------------------------------------------------


def test_upstream_connections_are_reused(client: httpx.Client, upstream: FakeUpstream) -> None:
    for _ in range(5):
        assert client.post("/echo/reuse", json={"n": 1}).status_code == 200
    assert len({r["client_port"] for r in upstream.requests}) == 1


def test_connections_the_upstream_closed_are_not_reused(tmp_path_factory: pytest.TempPathFactory) -> None:
    quick = FakeUpstream(keep_alive=0.2).start()  # closes idle connections after 0.2 s
    try:
        with GhostServer("--upstream-url", quick.url, home=tmp_path_factory.mktemp("quick")) as server:
            with httpx.Client(base_url=server.url, headers=server.headers, timeout=30) as http:
                for _ in range(3):
                    assert http.post("/echo/again", content=b"x" * 100).json()["size"] == 100
                    time.sleep(0.5)  # past the upstream's keep-alive: it closes the idle connection
                # Every request worked although the pooled connection had gone, and new ones were made.
                ports = {r["client_port"] for r in quick.requests if r["path"] == "/echo/again"}
                assert len(ports) >= 2
    finally:
        quick.stop()


def test_sse_through_a_reused_connection_after_a_full_body(client: httpx.Client) -> None:
    # A connection that carried a streamed reply to the end is clean for the next request.
    for _ in range(3):
        with client.stream("GET", "/sse/3?delay=0") as response:
            assert list(data_lines(response)) == ["data: 0", "data: 1", "data: 2"]
        assert client.get(f"/bytes/{200_000}").content == b"x" * 200_000


# --- upstream failures -----------------------------------------------------------------------------


def test_upstream_down_is_502(tmp_path_factory: pytest.TempPathFactory) -> None:
    unused = f"http://127.0.0.1:{free_port()}"
    with GhostServer("--upstream-url", unused, home=tmp_path_factory.mktemp("down")) as server:
        response = httpx.post(server.url + "/v1/completions", headers=server.headers, json={"prompt": "hi"})
        assert_error(response, 502, "upstream_unavailable")
        assert "unreachable" in response.json()["error"]["message"]
        # The operator sees it in the log, as for a 5xx on any other route.
        assert "WARNING" in server.log() and "upstream unreachable" in server.log()


def test_an_unreachable_upstream_reads_the_same_on_the_chat_and_the_proxy_path(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    # Chat goes through httpx, the proxy through aiohttp: one translation gives both the same error.
    unused = f"http://127.0.0.1:{free_port()}"
    with GhostServer("--upstream-url", unused, "--model", "m", home=tmp_path_factory.mktemp("down2")) as server:
        proxied = httpx.post(server.url + "/v1/completions", headers=server.headers, json={"prompt": "hi"})
        chatted = httpx.post(server.url + "/v1/chat/completions", headers=server.headers,
                             json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    for response in (proxied, chatted):
        assert_error(response, 502, "upstream_unavailable")
        assert response.json()["error"]["message"].startswith("upstream unreachable: ")


def test_no_upstream_configured_is_502(tmp_path_factory: pytest.TempPathFactory) -> None:
    with GhostServer("--embedded-model", "off", home=tmp_path_factory.mktemp("none")) as server:
        assert_error(httpx.get(server.url + "/anything", headers=server.headers), 502, "upstream_unavailable")


def test_slow_upstream_is_504(impatient: GhostServer) -> None:
    response = httpx.get(impatient.url + "/slow/3", headers=impatient.headers, timeout=30)
    assert_error(response, 504, "upstream_timeout")


def test_upstream_stall_mid_sse_ends_with_an_in_band_error(impatient: GhostServer, upstream: FakeUpstream) -> None:
    with httpx.Client(base_url=impatient.url, headers=impatient.headers, timeout=STREAM_TIMEOUT) as http:
        with http.stream("GET", "/hold/stalled") as response:
            assert response.status_code == 200
            lines = list(data_lines(response))
    upstream.release("stalled")
    assert lines[0] == "data: first"
    assert lines[1] == "event: error"
    error = json.loads(lines[2].removeprefix("data: "))["error"]
    assert error["type"] == "upstream_timeout"
    assert lines[3:] == ["data: [DONE]"]


def test_upstream_breaking_mid_sse_ends_with_an_in_band_error(client: httpx.Client) -> None:
    with client.stream("GET", "/broken/3?type=sse") as response:
        lines = list(data_lines(response))
    assert lines[:3] == ["data: 0", "data: 1", "data: 2"]
    assert lines[3] == "event: error"
    assert json.loads(lines[4].removeprefix("data: "))["error"]["type"] == "upstream_unavailable"
    assert lines[5:] == ["data: [DONE]"]


def test_upstream_breaking_mid_body_truncates_visibly(client: httpx.Client) -> None:
    # A byte stream has no in-band error: the client must see an incomplete body, not a clean end.
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/broken/3")
    assert client.get("/echo/still-alive").status_code == 200


# --- upstreams that misbehave below HTTP ------------------------------------------------------------
# The fake upstream is a well-behaved uvicorn; these bare socket servers do what it never would.


@dataclass(frozen=True)
class Seen:
    """One request a raw upstream took in: on which of its connections, and what it carried."""

    connection: int
    method: str
    path: str
    body: bytes


def read_head(stream: BinaryIO) -> tuple[str, str, dict[str, str]] | None:
    """A request's method, target and headers (names lower-cased); None if the peer closed first."""
    lines: list[bytes] = []
    while (line := stream.readline(65536)) not in (b"\r\n", b"\n"):
        if not line:
            return None
        lines.append(line.rstrip(b"\r\n"))
    method, target, _ = lines[0].decode("latin-1").split(" ", 2)
    fields = (line.decode("latin-1").split(":", 1) for line in lines[1:])
    return method, target, {name.strip().lower(): value.strip() for name, value in fields}


def read_request(stream: BinaryIO, connection: int) -> Seen | None:
    """One whole request, body included (Content-Length framing, which is all these tests send)."""
    head = read_head(stream)
    if head is None:
        return None
    method, target, headers = head
    assert "transfer-encoding" not in headers, "raw upstreams read Content-Length bodies only"
    body = stream.read(int(headers.get("content-length", "0")))
    return Seen(connection, method, target, body)


def answer(conn: socket.socket, payload: dict[str, object]) -> None:
    body = json.dumps(payload).encode()
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: keep-alive\r\n"
                 b"content-length: %d\r\n\r\n%s" % (len(body), body))


class RawUpstream:
    """A bare HTTP/1.1 server on loopback, one thread per connection, `handle` deciding what to do.

    `stop()` stops accepting, shuts every connection down (waking any thread blocked reading it)
    and joins the threads; every socket read is bounded anyway, so none outlives a broken test long.
    """

    IO_TIMEOUT = 30.0

    def __init__(self, receive_buffer: int | None = None) -> None:
        self._listener = socket.socket()
        if receive_buffer:  # inherited by accepted sockets: the kernel holds less of an unread body
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.05)  # the accept loop checks for stop() this often
        self.port = self._listener.getsockname()[1]
        self.stopping = threading.Event()
        self.seen: list[Seen] = []
        self._conns: list[socket.socket] = []
        self._handlers: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def handle(self, conn: socket.socket, stream: BinaryIO, number: int) -> None:
        raise NotImplementedError

    def start(self) -> "RawUpstream":
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._acceptor.join(timeout=5)  # no new connections from here on
        self._listener.close()
        for conn in self._conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed by its handler
                pass
        for thread in self._handlers:
            thread.join(timeout=5)

    def __enter__(self) -> "RawUpstream":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(self.IO_TIMEOUT)
            self._conns.append(conn)
            handler = threading.Thread(target=self._serve, args=(conn, len(self._conns)), daemon=True)
            self._handlers.append(handler)
            handler.start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        stream = conn.makefile("rb")
        try:
            self.handle(conn, stream, number)
        except OSError:  # Ghost hung up, or stop() shut the connection down
            pass
        finally:
            stream.close()
            conn.close()  # after a whole request was read, a clean FIN rather than a reset


class StallingUpstream(RawUpstream):
    """Takes a request's head, then reads nothing more and never answers, until stopped.

    A GET (Ghost's model discovery at startup) is answered, so that startup does not wait for it.
    """

    def __init__(self) -> None:
        super().__init__(receive_buffer=64 * 1024)

    def handle(self, conn: socket.socket, stream: BinaryIO, number: int) -> None:
        if (head := read_head(stream)) is None:
            return
        if head[0] == "GET":
            answer(conn, {"object": "list", "data": []})
            return
        self.seen.append(Seen(number, head[0], head[1], b""))
        self.stopping.wait(self.IO_TIMEOUT)


class OneAnswerPerConnection(RawUpstream):
    """Answers the first request on a connection and keeps it alive; closes it, unanswered, as soon
    as a second request has come in on it: a pooled connection that dies just as it is reused."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped: list[Seen] = []

    def handle(self, conn: socket.socket, stream: BinaryIO, number: int) -> None:
        if (first := read_request(stream, number)) is None:
            return
        self.seen.append(first)
        answer(conn, {"connection": number, "size": len(first.body), "sha256": sha(first.body)})
        if (second := read_request(stream, number)) is not None:
            self.dropped.append(second)


class DropsEveryRequest(RawUpstream):
    """Reads each request whole, then closes its connection without a byte of answer."""

    def handle(self, conn: socket.socket, stream: BinaryIO, number: int) -> None:
        if (request := read_request(stream, number)) is not None:
            self.seen.append(request)


# What Ghost asks an upstream at start on its own shared client (model discovery, the context-window
# probes of ghost.llm.window), not through the proxy under test.
STARTUP_PROBES = frozenset({"/v1/models", "/props", "/api/show"})


def ghost_on(upstream: RawUpstream, home: Path, *args: str) -> GhostServer:
    return GhostServer("--upstream-url", upstream.url, *args, home=home)


@pytest.fixture(scope="module")
def stalling(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StallingUpstream, GhostServer]]:
    """An upstream that stops reading the request body, behind a Ghost with a 1 s read timeout."""
    with StallingUpstream() as raw, ghost_on(raw, tmp_path_factory.mktemp("stall"), "--read-timeout", "1") as server:
        yield raw, server


BIG_UPLOAD = 32 * 1024 * 1024  # more than the socket buffers between client and upstream can hold


def big_body(piece: int = 64 * 1024) -> Iterator[bytes]:
    block = b"u" * piece
    for _ in range(BIG_UPLOAD // piece):
        yield block


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_upstream_that_stops_reading_the_body_is_504(stalling: tuple[StallingUpstream, GhostServer],
                                                     framing: str) -> None:
    raw, server = stalling
    before = len(raw.seen)
    headers = dict(server.headers)
    if framing == "content-length":
        headers["content-length"] = str(BIG_UPLOAD)
    response = httpx.post(server.url + f"/upload/{framing}", content=big_body(), headers=headers, timeout=30)
    assert_error(response, 504, "upstream_timeout")
    assert "request body" in response.json()["error"]["message"]  # the write stall, not a read timeout
    # The upstream did get the request: it was the body it stopped taking.
    assert [(s.method, s.path) for s in raw.seen[before:]] == [("POST", f"/upload/{framing}")]


def test_a_reused_connection_closed_unanswered_is_sent_again(tmp_path_factory: pytest.TempPathFactory) -> None:
    with OneAnswerPerConnection() as raw, ghost_on(raw, tmp_path_factory.mktemp("stale")) as server, \
            httpx.Client(base_url=server.url, headers=server.headers, timeout=30) as http:
        warm = http.get("/warm").json()["connection"]  # now kept alive in Ghost's pool
        body = os.urandom(1000)
        posted = http.post("/post", content=body)
        assert posted.status_code == 200, posted.text
        assert posted.json()["size"] == len(body) and posted.json()["sha256"] == sha(body)
        resent = posted.json()["connection"]
        got = http.get("/get")
        assert got.status_code == 200, got.text
        # Each went out first on the pooled connection, which the upstream closed on seeing it, and
        # was answered on a new one. (Ghost's startup model discovery has a connection of its own.)
        assert [(s.connection, s.method, s.path, s.body) for s in raw.dropped if s.path not in STARTUP_PROBES] == [
            (warm, "POST", "/post", body), (resent, "GET", "/get", b"")]
        assert len({warm, resent, got.json()["connection"]}) == 3
        assert [(s.method, s.path) for s in raw.seen if s.path not in STARTUP_PROBES] == [
            ("GET", "/warm"), ("POST", "/post"), ("GET", "/get")]


@pytest.mark.parametrize("size", [1000, 200_000], ids=["in memory", "streamed"])
def test_a_fresh_connection_closed_unanswered_is_502_and_not_sent_again(
        tmp_path_factory: pytest.TempPathFactory, size: int) -> None:
    with DropsEveryRequest() as raw, ghost_on(raw, tmp_path_factory.mktemp("drops")) as server, \
            httpx.Client(base_url=server.url, headers=server.headers, timeout=30) as http:
        for attempt in range(1, 4):
            response = http.post(f"/drop/{attempt}", content=os.urandom(size))
            assert_error(response, 502, "upstream_unavailable")
            # The upstream may have acted on it: exactly one attempt per client request.
            assert [(s.method, s.path, len(s.body)) for s in raw.seen if s.path not in STARTUP_PROBES] == [
                ("POST", f"/drop/{n}", size) for n in range(1, attempt + 1)]


# --- body limit --------------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_body_over_the_limit_is_413(tuned_client: httpx.Client, upstream: FakeUpstream, framing: str) -> None:
    body = os.urandom(BODY_LIMIT + 1)
    response = tuned_client.post("/echo/big", content=body if framing == "content-length" else chunked(body))
    assert_error(response, 413, "request_too_large")
    assert str(BODY_LIMIT) in response.json()["error"]["message"]
    assert not [r for r in upstream.requests if r["path"] == "/echo/big"]  # nothing complete reached it
    # Ghost and its upstream connections are fine afterwards.
    assert tuned_client.post("/echo/after", content=b"ok").json()["size"] == 2


def test_chunked_body_far_over_the_limit_is_413(tuned_client: httpx.Client) -> None:
    response = tuned_client.post("/echo/huge", content=chunked(os.urandom(256 * 1024), 4096))
    assert_error(response, 413, "request_too_large")


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_body_at_the_limit_passes(tuned_client: httpx.Client, framing: str) -> None:
    body = os.urandom(BODY_LIMIT)
    response = tuned_client.post("/echo/exact", content=body if framing == "content-length" else chunked(body))
    assert response.status_code == 200
    assert response.json()["sha256"] == sha(body)
