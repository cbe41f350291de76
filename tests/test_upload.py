"""POST /api/upload against a real Ghost: placement, path guards, the size cap, no leftovers."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ghost.testing.fake_upstream import FakeUpstream
from ghost.testing.server import GhostServer, no_bundled_model

MB = 1024 * 1024
SMALL_CAP = 64 * 1024


@pytest.fixture(scope="module")
def server(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    with GhostServer("--upload-max-bytes", str(SMALL_CAP), *no_bundled_model(upstream.url),
                     home=tmp_path_factory.mktemp("ghost-up")) as ghost:
        yield ghost


@pytest.fixture()
def http(server: GhostServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=60) as client:
        yield client


@pytest.fixture()
def sandbox(server: GhostServer) -> Path:
    root = server.home / "sandbox"
    for child in sorted(root.rglob("*"), reverse=True):
        child.rmdir() if child.is_dir() and not child.is_symlink() else child.unlink()
    return root


def listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def tmp_leftovers(server: GhostServer) -> list[str]:
    return sorted(p.name for p in (server.home / ".sandbox.ghost-tmp").iterdir())


def eventually_empty(server: GhostServer) -> list[str]:
    """Temp leftovers once the server has finished with a request it saw aborted (bounded poll)."""
    deadline = time.monotonic() + 60
    while tmp_leftovers(server) and time.monotonic() < deadline:
        time.sleep(0.02)
    return tmp_leftovers(server)


def test_upload_places_the_file_and_reports_it(http: httpx.Client, sandbox: Path, server: GhostServer) -> None:
    data = os.urandom(5000)
    response = http.post("/api/upload", files={"file": ("report.bin", data)})
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "success", "filename": "report.bin", "size": 5000}
    assert (sandbox / "report.bin").read_bytes() == data
    assert tmp_leftovers(server) == []


@pytest.mark.parametrize("how", ["form", "query"])
def test_upload_into_a_subfolder_creates_it(how: str, http: httpx.Client, sandbox: Path) -> None:
    where = {"data": {"path": "docs/2024"}} if how == "form" else {"params": {"path": "docs/2024"}}
    response = http.post("/api/upload", files={"file": ("ü notes.txt", "hello ✓".encode())}, **where)
    assert response.status_code == 200, response.text
    assert response.json()["filename"] == "docs/2024/ü notes.txt"
    assert (sandbox / "docs/2024/ü notes.txt").read_text() == "hello ✓"


def test_upload_replaces_an_existing_file(http: httpx.Client, sandbox: Path) -> None:
    (sandbox / "a.txt").write_text("old")
    assert http.post("/api/upload", files={"file": ("a.txt", b"new")}).status_code == 200
    assert (sandbox / "a.txt").read_text() == "new"


def test_upload_of_an_empty_file(http: httpx.Client, sandbox: Path) -> None:
    response = http.post("/api/upload", files={"file": ("empty", b"")})
    assert response.status_code == 200 and response.json()["size"] == 0
    assert (sandbox / "empty").read_bytes() == b""


@pytest.mark.parametrize("folder", ["../outside", "/etc", "a/../../x", "..", "a\\..\\..\\x", "C:/x", "a\x00b"])
def test_upload_refuses_traversal_in_the_folder(folder: str, http: httpx.Client, sandbox: Path,
                                                server: GhostServer) -> None:
    response = http.post("/api/upload", files={"file": ("x.txt", b"evil")}, data={"path": folder})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_path"
    assert listing(sandbox) == []
    assert not (server.home / "outside").exists()
    assert tmp_leftovers(server) == []


@pytest.mark.parametrize("filename", ["../evil.txt", "/etc/evil", "..", "a\\..\\evil"])
def test_upload_refuses_traversal_in_the_filename(filename: str, http: httpx.Client, sandbox: Path,
                                                  server: GhostServer) -> None:
    response = http.post("/api/upload", files={"file": (filename, b"evil")})
    assert response.status_code == 400, response.text
    assert listing(sandbox) == []
    assert not (server.home / "evil.txt").exists()


def test_upload_through_a_symlink_leading_outside_is_refused(http: httpx.Client, sandbox: Path,
                                                             tmp_path: Path) -> None:
    (sandbox / "out").symlink_to(tmp_path)
    response = http.post("/api/upload", files={"file": ("x.txt", b"evil")}, data={"path": "out"})
    assert response.status_code == 404
    assert list(tmp_path.iterdir()) == []


def test_upload_onto_a_folder_or_under_a_file_is_400(http: httpx.Client, sandbox: Path) -> None:
    (sandbox / "folder").mkdir()
    (sandbox / "file.txt").write_text("x")
    assert http.post("/api/upload", files={"file": ("folder", b"x")}).status_code == 400
    assert http.post("/api/upload", files={"file": ("y", b"x")}, data={"path": "file.txt"}).status_code == 400
    assert listing(sandbox) == ["file.txt", "folder"]


def test_upload_needs_multipart_with_a_file_part(http: httpx.Client, sandbox: Path) -> None:
    raw = http.post("/api/upload", content=b"raw", headers={"content-type": "application/octet-stream"})
    assert raw.status_code == 400
    assert http.post("/api/upload", data={"path": "x"}, files={"other": ("a", b"1")}).status_code == 400
    assert http.post("/api/upload", files={"file": ("", b"1")}).status_code == 400
    assert listing(sandbox) == []


def test_upload_at_the_cap_passes_and_one_byte_more_is_413_leaving_nothing(http: httpx.Client, sandbox: Path,
                                                                           server: GhostServer) -> None:
    assert http.post("/api/upload", files={"file": ("exact.bin", bytes(SMALL_CAP))}).status_code == 200
    response = http.post("/api/upload", files={"file": ("over.bin", bytes(SMALL_CAP + 1))})
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"
    assert listing(sandbox) == ["exact.bin"]
    assert tmp_leftovers(server) == []


def test_truncated_upload_leaves_nothing(server: GhostServer, sandbox: Path) -> None:
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.bin\"\r\n\r\n"
            + b"A" * 20000)  # no closing boundary, and the connection ends early
    head = (f"POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Ghost-Key: {server.api_key}\r\n"
            f"Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {len(body) + 5000}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1000)
    with httpx.Client(base_url=server.url, timeout=10) as probe:  # the server is still fine
        assert probe.get("/api/version").status_code == 200
    assert eventually_empty(server) == []
    assert listing(sandbox) == []


def test_multipart_body_without_closing_boundary_is_400(http: httpx.Client, sandbox: Path) -> None:
    body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nhello"
    response = http.post("/api/upload", content=body,
                         headers={"content-type": "multipart/form-data; boundary=XyZ"})
    assert response.status_code == 400
    assert listing(sandbox) == []


def test_upload_needs_the_key(server: GhostServer, sandbox: Path) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as anon:
        assert anon.post("/api/upload", files={"file": ("a", b"1")}).status_code == 401
    assert listing(sandbox) == []


def test_default_cap_takes_100_mb_and_refuses_one_byte_more(upstream: FakeUpstream, tmp_path: Path) -> None:
    with GhostServer(*no_bundled_model(upstream.url), home=tmp_path / "home") as ghost, \
            httpx.Client(base_url=ghost.url, headers=ghost.headers, timeout=120) as client:
        ok = client.post("/api/upload", files={"file": ("full.bin", bytes(100 * MB))})
        assert ok.status_code == 200, ok.text
        assert ok.json()["size"] == 100 * MB
        too_big = client.post("/api/upload", files={"file": ("over.bin", bytes(100 * MB + 1))})
        assert too_big.status_code == 413
        assert listing(ghost.home / "sandbox") == ["full.bin"]
        assert tmp_leftovers(ghost) == []
