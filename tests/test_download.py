"""GET /api/download/{path} against a real Ghost: streaming, ranges, and every way out refused."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import httpx
import pytest

from ghost.testing.fake_upstream import FakeUpstream
from ghost.testing.server import GhostServer, no_bundled_model


@pytest.fixture(scope="module")
def server(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    with GhostServer(*no_bundled_model(upstream.url), home=tmp_path_factory.mktemp("ghost-down")) as ghost:
        yield ghost


@pytest.fixture()
def http(server: GhostServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def content(server: GhostServer) -> bytes:
    data = os.urandom(300_000)
    root = server.home / "sandbox"
    (root / "dir/sub").mkdir(parents=True)
    (root / "dir/sub/data.bin").write_bytes(data)
    (root / "naïve ✓.txt").write_text("unicode")
    (root / "secret-outside.txt").symlink_to(server.home / "ghost.db")
    (root / "inside-link").symlink_to(root / "dir/sub/data.bin")
    (root / "out-dir").symlink_to(server.home)
    os.mkfifo(root / "pipe")
    return data


def raw_get(server: GhostServer, target: str) -> int:
    """Status of a GET sent byte for byte, with no client-side path clean-up."""
    request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Ghost-Key: {server.api_key}\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request.encode())
        return int(sock.recv(100).split()[1])


def test_download_streams_the_file_with_a_content_disposition(http: httpx.Client, content: bytes) -> None:
    response = http.get("/api/download/dir/sub/data.bin")
    assert response.status_code == 200
    assert response.content == content
    assert response.headers["content-disposition"] == 'attachment; filename="data.bin"'
    assert response.headers["accept-ranges"] == "bytes"


def test_download_of_a_unicode_name(http: httpx.Client, content: bytes) -> None:
    response = http.get("/api/download/naïve ✓.txt")
    assert response.status_code == 200 and response.text == "unicode"
    assert "filename*=utf-8''na%C3%AFve%20%E2%9C%93.txt" in response.headers["content-disposition"]


def test_range_requests_return_the_right_bytes(http: httpx.Client, content: bytes) -> None:
    middle = http.get("/api/download/dir/sub/data.bin", headers={"Range": "bytes=1000-1999"})
    assert middle.status_code == 206
    assert middle.content == content[1000:2000]
    assert middle.headers["content-range"] == f"bytes 1000-1999/{len(content)}"
    tail = http.get("/api/download/dir/sub/data.bin", headers={"Range": "bytes=-500"})
    assert tail.status_code == 206 and tail.content == content[-500:]
    beyond = http.get("/api/download/dir/sub/data.bin", headers={"Range": f"bytes={len(content) + 10}-"})
    assert beyond.status_code == 416


def test_a_symlink_is_not_followed_even_when_it_stays_inside(http: httpx.Client, content: bytes) -> None:
    # Where a link leads can change right after it was checked, so Ghost follows none.
    assert http.get("/api/download/dir/sub/data.bin").content == content  # the file itself: fine
    assert http.get("/api/download/inside-link").status_code == 404


@pytest.mark.parametrize("name", ["secret-outside.txt", "out-dir/ghost.db", "missing.txt", "dir/missing",
                                  "pipe"])
def test_outside_missing_or_special_is_404(name: str, http: httpx.Client, content: bytes) -> None:
    response = http.get(f"/api/download/{name}")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


@pytest.mark.parametrize("target", [
    "/api/download/../ghost.db",
    "/api/download/%2e%2e/ghost.db",
    "/api/download/dir/%2e%2e/%2e%2e/ghost.db",
    "/api/download//etc/passwd",
    "/api/download/%2fetc%2fpasswd",
    "/api/download/dir%5c..%5c..%5cghost.db",
    "/api/download/a%00b",
    "/api/download/",
])
def test_traversal_shapes_are_404(target: str, server: GhostServer, content: bytes) -> None:
    assert raw_get(server, target) == 404


def test_a_folder_is_400(http: httpx.Client, content: bytes) -> None:
    response = http.get("/api/download/dir/sub")
    assert response.status_code == 400


def test_download_needs_the_key(server: GhostServer, content: bytes) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as anon:
        assert anon.get("/api/download/dir/sub/data.bin").status_code == 401


def test_a_name_with_a_line_break_is_served_not_proxied(server: GhostServer, http: httpx.Client) -> None:
    # Found by schema fuzzing: Starlette's `path` parameter stops at a line break, so such a name
    # missed this route and went to the catch-all proxy, which forwarded it upstream.
    (server.home / "sandbox" / "two\nlines.txt").write_text("both")
    response = http.get("/api/download/two%0Alines.txt")
    assert (response.status_code, response.text) == (200, "both")
    missing = http.get("/api/download/no%0Asuch")
    assert (missing.status_code, missing.json()["error"]["type"]) == (404, "not_found_error")
