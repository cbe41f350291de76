"""Workspace save and load against a real Ghost on loopback: round trip, skills, hostile archives."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import sqlite3
import stat
import struct
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ghost.store.history import messages_of, replace as replace_history
from ghost.testing.fake_upstream import FakeUpstream
from ghost.testing.server import GhostServer, no_bundled_model

MAX_ENTRIES = 500  # the module's Ghost runs with this entry cap, so "too many" stays small
ZIP_TYPE = {"content-type": "application/zip"}


# --- a Ghost and its workspace ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    home = tmp_path_factory.mktemp("ghost-ws-home")
    with GhostServer("--workspace-load-max-entries", str(MAX_ENTRIES), *no_bundled_model(upstream.url),
                     home=home) as ghost:
        yield ghost


@pytest.fixture()
def http(server: GhostServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=60) as client:
        yield client


@pytest.fixture()
def sandbox(server: GhostServer) -> Path:
    root = server.home / "sandbox"
    wipe(server)
    return root


def wipe(server: GhostServer) -> None:
    root = server.home / "sandbox"
    for child in root.iterdir():
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    with db(server) as conn:
        conn.execute("DELETE FROM scratchpad")
        conn.execute("DELETE FROM history_messages")
        conn.execute("DELETE FROM history")


def db(server: GhostServer) -> sqlite3.Connection:
    return sqlite3.connect(server.home / "ghost.db", timeout=10, isolation_level=None)


def set_state(server: GhostServer, scratchpad: dict, history: dict[str, list]) -> None:
    with db(server) as conn:
        for key, value in scratchpad.items():
            conn.execute("INSERT OR REPLACE INTO scratchpad (workspace, key, value, updated_at) VALUES ('admin', ?, ?, ?)",
                         (key, json.dumps(value), time.time()))
        for session, messages in history.items():
            replace_history(conn, "admin", session, messages)


def get_state(server: GhostServer) -> tuple[dict, dict]:
    with db(server) as conn:
        pad = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM scratchpad")}
        hist = {k: messages_of(conn, "admin", k) for (k,) in conn.execute("SELECT session_id FROM history").fetchall()}
    return pad, hist


def tree(root: Path) -> dict[str, str]:
    """Every path below root: a file's sha256, 'dir', or 'link->target'."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[rel] = f"link->{os.readlink(path)}"
        elif path.is_dir():
            found[rel] = "dir"
        else:
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def tmp_leftovers(server: GhostServer) -> list[str]:
    return sorted(p.name for p in (server.home / ".sandbox.ghost-tmp").iterdir())


SCRATCHPAD = {"plan": {"steps": ["read", "write"], "done": 1}, "note": "héllo ✓", "n": 42}
HISTORY = [{"role": "user", "content": "make a plot"}, {"role": "assistant", "content": "done 📈"}]


def fill(root: Path) -> None:
    (root / "src/pkg/deep/er").mkdir(parents=True)
    (root / "src/pkg/__init__.py").write_text("")
    (root / "src/pkg/deep/er/main.py").write_text("print('hi')\n" * 300)
    (root / "data.bin").write_bytes(os.urandom(300_000))
    (root / "zeros.bin").write_bytes(bytes(200_000))
    (root / "empty.txt").write_bytes(b"")
    (root / "empty folder").mkdir()
    (root / "naïve — ünïcødé 文件.txt").write_text("unicode name ✓")
    (root / "日本").mkdir()
    (root / "日本/😀.md").write_text("emoji")
    run = root / "run.sh"
    run.write_text("#!/bin/sh\necho ok\n")
    run.chmod(0o755)
    skills = root / "acquired_skills"
    skills.mkdir()
    (skills / "web_fetch.py").write_text("def web_fetch(url: str) -> str:\n    return url\n")
    (skills / "web_fetch.json").write_text(json.dumps({"name": "web_fetch", "description": "fetch"}))


def save(http: httpx.Client, **kwargs: object) -> bytes:
    response = http.post("/api/workspace/save", **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    return response.content


def load(http: httpx.Client, archive: bytes, session: str | None = None) -> httpx.Response:
    headers = {**ZIP_TYPE, "X-Ghost-Session": session} if session else ZIP_TYPE
    return http.post("/api/workspace/load", content=archive, headers=headers)


# --- round trip -------------------------------------------------------------------------------------
def test_save_wipe_load_restores_files_scratchpad_history_and_skills(server: GhostServer, http: httpx.Client,
                                                                     sandbox: Path) -> None:
    fill(sandbox)
    set_state(server, SCRATCHPAD, {"s1": HISTORY, "other": [{"role": "user", "content": "x"}]})
    before = tree(sandbox)

    response = http.post("/api/workspace/save", headers={"X-Ghost-Session": "s1"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"].startswith("attachment; filename=workspace_")
    archive = response.content

    names = zipfile.ZipFile(io.BytesIO(archive)).namelist()
    assert "session.json" in names and "sandbox/src/pkg/deep/er/main.py" in names
    assert "acquired_skills/web_fetch.py" in names
    assert not any(n.startswith("sandbox/acquired_skills") for n in names), "skills must not be stored twice"
    session = json.loads(zipfile.ZipFile(io.BytesIO(archive)).read("session.json"))
    assert session["chat_history"] == HISTORY and session["scratchpad"] == SCRATCHPAD

    wipe(server)
    assert tree(sandbox) == {}
    result = load(http, archive, session="s1")
    assert result.status_code == 200, result.text
    body = result.json()
    assert body["status"] == "success" and body["chat_history"] == HISTORY
    assert body["files"] == sum(1 for v in before.values() if v != "dir")

    assert tree(sandbox) == before
    assert os.access(sandbox / "run.sh", os.X_OK)
    pad, hist = get_state(server)
    assert pad == SCRATCHPAD and hist == {"s1": HISTORY}
    assert tmp_leftovers(server) == []


def test_save_uses_the_clients_chat_history_when_sent(server: GhostServer, http: httpx.Client, sandbox: Path) -> None:
    set_state(server, {}, {"default": HISTORY})
    mine = [{"role": "user", "content": "from the client"}]
    archive = save(http, json={"chat_history": mine})
    assert json.loads(zipfile.ZipFile(io.BytesIO(archive)).read("session.json"))["chat_history"] == mine
    stored = json.loads(zipfile.ZipFile(io.BytesIO(save(http))).read("session.json"))
    assert stored["chat_history"] == HISTORY


def test_save_refuses_a_chat_history_that_is_not_a_list(http: httpx.Client, sandbox: Path) -> None:
    response = http.post("/api/workspace/save", json={"chat_history": "nope"})
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_load_replaces_the_sandbox_but_keeps_existing_skills(server: GhostServer, http: httpx.Client,
                                                             sandbox: Path) -> None:
    fill(sandbox)
    (sandbox / "acquired_skills/calc.py").write_text("def calc(): return 1\n")
    (sandbox / "acquired_skills/calc.json").write_text('{"name": "calc"}')
    set_state(server, SCRATCHPAD, {})
    archive = save(http)

    wipe(server)
    (sandbox / "stale.txt").write_text("must disappear")
    skills = sandbox / "acquired_skills"
    skills.mkdir()
    (skills / "web_fetch.py").write_text("# my newer version\n")
    (skills / "web_fetch.json").write_text('{"name": "web_fetch", "v": 2}')
    set_state(server, {"old": 1}, {})

    response = load(http, archive)
    assert response.status_code == 200, response.text
    assert not (sandbox / "stale.txt").exists()
    assert (skills / "web_fetch.py").read_text() == "# my newer version\n", "existing skill overwritten"
    assert json.loads((skills / "web_fetch.json").read_text())["v"] == 2
    assert (skills / "calc.py").read_text() == "def calc(): return 1\n", "new skill from the archive not added"
    assert (skills / "calc.json").exists()
    assert get_state(server)[0] == SCRATCHPAD


def test_load_accepts_a_multipart_upload(server: GhostServer, http: httpx.Client, sandbox: Path) -> None:
    (sandbox / "a.txt").write_text("A")
    archive = save(http)
    wipe(server)
    response = http.post("/api/workspace/load", files={"file": ("ws.zip", archive, "application/zip")})
    assert response.status_code == 200, response.text
    assert (sandbox / "a.txt").read_text() == "A"
    assert response.json()["files"] == 1


def test_load_of_archive_from_another_tool_with_skills_inside_sandbox(server: GhostServer, http: httpx.Client,
                                                                      sandbox: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("session.json", json.dumps({"chat_history": [], "scratchpad": {"k": "v"}}))
        zf.writestr("sandbox/notes/a.txt", "a")
        zf.writestr("sandbox/acquired_skills/greet.py", "def greet(): ...")
    response = load(http, buf.getvalue())
    assert response.status_code == 200, response.text
    assert (sandbox / "notes/a.txt").read_text() == "a"
    assert (sandbox / "acquired_skills/greet.py").exists()


def test_save_skips_links_and_never_follows_them(server: GhostServer, http: httpx.Client, sandbox: Path,
                                                 tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (sandbox / "escape").symlink_to(outside)
    (sandbox / "secret-link").symlink_to(outside / "secret.txt")
    (sandbox / "ok.txt").write_text("ok")
    os.mkfifo(sandbox / "pipe")
    names = zipfile.ZipFile(io.BytesIO(save(http))).namelist()
    assert "sandbox/ok.txt" in names
    assert not any("secret" in n or "escape" in n or "pipe" in n for n in names)


def test_save_over_the_cap_is_413_and_leaves_no_temp_file(upstream: FakeUpstream, tmp_path: Path) -> None:
    with GhostServer("--workspace-save-max-bytes", "100000", *no_bundled_model(upstream.url),
                     home=tmp_path / "home") as ghost:
        (ghost.home / "sandbox" / "big.bin").write_bytes(os.urandom(300_000))
        with httpx.Client(base_url=ghost.url, headers=ghost.headers, timeout=60) as client:
            response = client.post("/api/workspace/save")
        assert response.status_code == 413
        assert response.json()["error"]["type"] == "request_too_large"
        assert tmp_leftovers(ghost) == []


def test_save_whose_entries_outgrow_the_cap_is_413_and_leaves_no_temp_file(upstream: FakeUpstream,
                                                                           tmp_path: Path) -> None:
    """The archive itself is capped, not only the files it reads: 3,000 empty files with long names
    read nothing (apparent size 0), yet their zip entries alone take ~0.9 MB."""
    with GhostServer("--workspace-save-max-bytes", "100000", *no_bundled_model(upstream.url),
                     home=tmp_path / "home") as ghost:
        folder = ghost.home / "sandbox" / "many"
        folder.mkdir()
        for i in range(3000):
            (folder / f"{i:04d}-{'n' * 96}.txt").touch()
        with httpx.Client(base_url=ghost.url, headers=ghost.headers, timeout=60) as client:
            response = client.post("/api/workspace/save")
            assert response.status_code == 413, f"answered {response.status_code}, {response.headers.get('content-type')}"
            assert response.json()["error"]["type"] == "request_too_large"
            assert "archive larger than the 100000-byte save limit" in response.json()["error"]["message"]
            assert tmp_leftovers(ghost) == []
            # The cap is on the archive, not on what a save may hold: with fewer entries it saves.
            shutil.rmtree(folder)
            folder.mkdir()
            for i in range(100):
                (folder / f"{i:04d}-{'n' * 96}.txt").touch()
            saved = client.post("/api/workspace/save")
            assert saved.status_code == 200 and len(saved.content) <= 100_000
            assert len([n for n in zipfile.ZipFile(io.BytesIO(saved.content)).namelist() if n.endswith(".txt")]) == 100


def test_the_event_loop_stays_free_while_a_large_save_runs(server: GhostServer, http: httpx.Client,
                                                          sandbox: Path) -> None:
    line = b"the quick brown fox jumps over the lazy dog, again and again and again\n"
    with open(sandbox / "big.txt", "wb") as out:
        for _ in range(4):
            out.write(line * (40 * 1024 * 1024 // len(line)))
    done = threading.Event()
    saved: list[int] = []

    def run_save() -> None:
        with httpx.Client(base_url=server.url, headers=server.headers, timeout=120) as client:
            with client.stream("POST", "/api/workspace/save") as response:
                done.set()  # headers arrived: the archive is built
                saved.append(sum(len(c) for c in response.iter_bytes()))

    worker = threading.Thread(target=run_save)
    worker.start()
    # The archive's size read just before each probe was sent and just after it was answered.
    spans: list[tuple[int, int]] = []
    with httpx.Client(base_url=server.url, timeout=30) as probe:
        while not done.is_set():
            before = archive_size(server)
            assert probe.get("/api/version").status_code == 200
            spans.append((before, archive_size(server)))
    worker.join(120)
    assert saved and saved[0] > 0
    # A probe sent once the archive had begun and answered before it was complete: the loop served
    # it mid-build. A blocked loop answers a probe sent mid-build only once the archive is complete.
    assert any(0 < before <= after < saved[0] for before, after in spans), spans


def archive_size(server: GhostServer) -> int:
    """The size of the largest file the server holds open in its temp folder (0 if none)."""
    assert server.process is not None
    sizes = [0]
    for fd in Path(f"/proc/{server.process.pid}/fd").iterdir():
        try:
            if ".ghost-tmp" in os.readlink(fd):
                sizes.append(os.stat(fd).st_size)
        except FileNotFoundError:
            continue
    return max(sizes)


def open_temp_files(server: GhostServer) -> list[str]:
    """Files the server process holds open in its temp folder (unnamed ones show as '#n (deleted)')."""
    assert server.process is not None
    fd_dir = Path(f"/proc/{server.process.pid}/fd")
    targets = []
    for fd in fd_dir.iterdir():
        try:
            targets.append(os.readlink(fd))
        except FileNotFoundError:
            continue
    return [t for t in targets if ".ghost-tmp" in t]


def test_a_client_that_goes_away_mid_download_leaves_no_archive_behind(server: GhostServer,
                                                                      sandbox: Path) -> None:
    (sandbox / "random.bin").write_bytes(os.urandom(30 * 1024 * 1024))
    # A small receive buffer: where the kernel lets a socket buffer 32 MB (tcp_rmem), the whole
    # archive could otherwise be sent, and its file closed, before the first chunk is read.
    small_buffer = httpx.HTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)])
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=60, transport=small_buffer) as client:
        with client.stream("POST", "/api/workspace/save") as response:
            assert response.status_code == 200
            # The iterator is kept: a dropped `iter_raw` generator is closed at once, and closing it
            # closes the connection, so the server could end the stream before the check below
            # (which made this test fail under load).
            chunks = response.iter_raw(65536)
            next(chunks)
            assert open_temp_files(server), "the archive should be open while it streams"
        # Leaving the block closes the connection with most of the archive unsent.
    deadline = time.monotonic() + 30  # generous: the suite runs on a loaded 2-core machine
    while open_temp_files(server) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert open_temp_files(server) == []
    assert tmp_leftovers(server) == []


def test_no_temp_files_remain_after_a_killed_server_restarts(upstream: FakeUpstream, tmp_path: Path) -> None:
    ghost = GhostServer(*no_bundled_model(upstream.url), home=tmp_path / "home").start()
    stale = ghost.home / ".sandbox.ghost-tmp" / "stage-leftover"
    stale.mkdir()
    (stale / "half.bin").write_bytes(b"x" * 1000)
    (ghost.home / ".sandbox.ghost-tmp" / "upload-x.part").write_bytes(b"y")
    ghost.stop(sig=9)
    ghost.start()
    try:
        assert tmp_leftovers(ghost) == []
    finally:
        ghost.stop()


# --- hostile and broken archives -----------------------------------------------------------------------
def raw_zip(entries: list[dict], claimed_count: int | None = None) -> bytes:
    """A zip written byte by byte, for archives zipfile will not write (NUL names, lying sizes)."""
    out, central = bytearray(), bytearray()
    for e in entries:
        name, data = e["name"], e["data"]
        method, crc, size = e.get("method", 0), e.get("crc", zlib.crc32(data)), e.get("size", len(data))
        flags, attr, system = e.get("flags", 0), e.get("attr", 0o100644 << 16), e.get("system", 3)
        offset = len(out)
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, flags, method, 0, 0x21, crc, len(data), size,
                           len(name), 0) + name + data
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", (system << 8) | 20, 20, flags, method, 0, 0x21,
                               crc, len(data), size, len(name), 0, 0, 0, 0, attr, offset) + name
    count = len(entries) if claimed_count is None else claimed_count
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(central), len(out), 0)
    return bytes(out + central + end)


SESSION = {"name": b"session.json", "data": b'{"chat_history": [], "scratchpad": {}}'}


def zeros_deflate(total: int, block: int = 1 << 20) -> bytes:
    """Raw deflate of `total` zero bytes, built from one compressed block repeated (fast to make)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = compressor.compress(bytes(block)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return piece * (total // block) + b"\x03\x00"


def with_zipfile(*members: tuple[str, bytes] | zipfile.ZipInfo) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("session.json", SESSION["data"])
        for member in members:
            if isinstance(member, zipfile.ZipInfo):
                zf.writestr(member, b"/etc/passwd")
            else:
                zf.writestr(*member)
    return buf.getvalue()


def special(name: str, kind: int, system: int = 3) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (kind | 0o777) << 16
    info.create_system = system
    return info


def good_archive() -> bytes:
    return with_zipfile(("sandbox/new.txt", b"new"))


BOMB = 2 << 30  # 2 GiB of zeros in about 2 MB


BAD_ARCHIVES = {
    "dotdot": (lambda: with_zipfile(("../x", b"evil")), 400),
    "absolute": (lambda: with_zipfile(("/etc/x", b"evil")), 400),
    "dotdot inside sandbox": (lambda: with_zipfile(("sandbox/../../x", b"evil")), 400),
    "backslash dotdot": (lambda: with_zipfile(("sandbox\\..\\..\\x", b"evil")), 400),
    "drive letter": (lambda: with_zipfile(("C:/x", b"evil")), 400),
    "drive letter backslash": (lambda: with_zipfile(("c:\\windows\\x", b"evil")), 400),
    "nul in name": (lambda: raw_zip([SESSION, {"name": b"sandbox/a\x00/../../x", "data": b"evil"}]), 400),
    "symlink": (lambda: with_zipfile(special("sandbox/link", stat.S_IFLNK)), 400),
    "symlink from a dos archiver": (lambda: with_zipfile(special("sandbox/link", stat.S_IFLNK, system=0)), 400),
    "fifo": (lambda: with_zipfile(special("sandbox/pipe", stat.S_IFIFO)), 400),
    "char device": (lambda: with_zipfile(special("sandbox/dev", stat.S_IFCHR)), 400),
    "zip bomb": (lambda: raw_zip([SESSION, {"name": b"sandbox/bomb", "data": zeros_deflate(BOMB), "method": 8,
                                            "size": BOMB, "crc": 0}]), 413),
    "zip bomb split over entries": (lambda: raw_zip([SESSION] + [
        {"name": f"sandbox/b{i}".encode(), "data": zeros_deflate(300 << 20), "method": 8, "size": 300 << 20,
         "crc": 0} for i in range(4)]), 413),
    "zip bomb lying about its size": (lambda: raw_zip([SESSION, {"name": b"sandbox/bomb", "method": 8,
                                                                 "data": zeros_deflate(BOMB), "size": 1000}]), 400),
    "too many entries": (lambda: with_zipfile(*[(f"sandbox/f{i}", b"") for i in range(MAX_ENTRIES + 5)]), 413),
    "too many entries, count field lying": (lambda: raw_zip(
        [SESSION] + [{"name": f"sandbox/f{i}".encode(), "data": b""} for i in range(MAX_ENTRIES + 5)],
        claimed_count=2), 413),
    "truncated": (lambda: good_archive()[: len(good_archive()) // 2], 400),
    "truncated tail": (lambda: good_archive()[:-10], 400),
    "not a zip": (lambda: b"this is not a zip file at all", 400),
    "empty body": (lambda: b"", 400),
    "encrypted entry": (lambda: raw_zip([SESSION, {"name": b"sandbox/e", "data": b"xxxx", "flags": 1}]), 400),
    "unknown compression": (lambda: raw_zip([SESSION, {"name": b"sandbox/c", "data": b"xxxx", "method": 99}]), 400),
    "corrupt deflate data": (lambda: raw_zip([SESSION, {"name": b"sandbox/c", "data": b"\xff" * 64, "method": 8,
                                                        "size": 100}]), 400),
    "bad crc": (lambda: raw_zip([SESSION, {"name": b"sandbox/c", "data": b"hello", "crc": 1}]), 400),
    "duplicate names": (lambda: raw_zip([SESSION, {"name": b"sandbox/a", "data": b"1"},
                                         {"name": b"sandbox/a", "data": b"2"}]), 400),
    "file and folder clash": (lambda: with_zipfile(("sandbox/a", b"1"), ("sandbox/a/b", b"2")), 400),
    "no session.json": (lambda: raw_zip([{"name": b"sandbox/a", "data": b"1"}]), 400),
    "session.json not json": (lambda: raw_zip([{"name": b"session.json", "data": b"{nope"}]), 400),
    "session.json wrong shape": (lambda: raw_zip([{"name": b"session.json",
                                                   "data": b'{"chat_history": "x", "scratchpad": {}}'}]), 400),
}

# What the error must name, where more than one check could refuse the archive: the message shows
# that the check meant for the case refused it (a count read before zipfile parses the records, a
# declared size before anything is unpacked), not a later one that happens to catch it too.
REASONS = {
    "dotdot": "unsafe entry name", "absolute": "unsafe entry name", "dotdot inside sandbox": "unsafe entry name",
    "backslash dotdot": "unsafe entry name", "drive letter": "unsafe entry name",
    "drive letter backslash": "unsafe entry name", "nul in name": "unsafe entry name",
    "symlink": "is a symbolic link", "symlink from a dos archiver": "is a symbolic link",
    "fifo": "is a special file", "char device": "is a special file",
    "zip bomb": "bytes; the limit is",
    "zip bomb split over entries": "bytes; the limit is",
    "too many entries": f"archive has more than {MAX_ENTRIES} entries",
    "too many entries, count field lying": f"archive has more than {MAX_ENTRIES} entries",
    "encrypted entry": "entry 'sandbox/e' is encrypted",  # not zipfile's "File ... is encrypted" later
    "duplicate names": "appears twice", "file and folder clash": "is both a file and a folder",
}


@pytest.mark.parametrize("case", list(BAD_ARCHIVES))
def test_bad_archive_is_refused_and_the_workspace_is_unchanged(case: str, server: GhostServer,
                                                                http: httpx.Client, sandbox: Path) -> None:
    make, status = BAD_ARCHIVES[case]
    clear_what_earlier_cases_left(server)  # the module shares one Ghost: each case answers for itself
    fill(sandbox)
    set_state(server, SCRATCHPAD, {"default": HISTORY})
    before, state_before = tree(sandbox), get_state(server)

    response = load(http, make())

    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    assert REASONS.get(case, "") in response.json()["error"]["message"]
    assert tree(sandbox) == before
    assert get_state(server) == state_before
    assert not (server.home / "x").exists() and not (server.home.parent / "x").exists()
    assert tmp_leftovers(server) == []


def clear_what_earlier_cases_left(server: GhostServer) -> None:
    """Files an earlier case's archive got out, and its temp leftovers: that case failed for them
    already, and a later case must not fail for them again."""
    for escaped in (server.home / "x", server.home.parent / "x"):
        escaped.unlink(missing_ok=True)
    for leftover in (server.home / ".sandbox.ghost-tmp").iterdir():
        shutil.rmtree(leftover) if leftover.is_dir() and not leftover.is_symlink() else leftover.unlink()


def test_load_refuses_a_body_that_is_neither_zip_nor_multipart(http: httpx.Client, sandbox: Path) -> None:
    response = http.post("/api/workspace/load", content=good_archive(), headers={"content-type": "text/plain"})
    assert response.status_code == 400


def test_load_multipart_without_file_field_is_400(http: httpx.Client, sandbox: Path) -> None:
    response = http.post("/api/workspace/load", files={"other": ("ws.zip", good_archive())})
    assert response.status_code == 400


def test_load_upload_over_the_cap_is_413_and_leaves_nothing(upstream: FakeUpstream, tmp_path: Path) -> None:
    with GhostServer("--upload-max-bytes", "50000", *no_bundled_model(upstream.url), home=tmp_path / "home") as ghost:
        (ghost.home / "sandbox" / "keep.txt").write_text("keep")
        big = with_zipfile(("sandbox/r.bin", os.urandom(80_000)))
        with httpx.Client(base_url=ghost.url, headers=ghost.headers, timeout=60) as client:
            raw = client.post("/api/workspace/load", content=big, headers=ZIP_TYPE)
            multipart = client.post("/api/workspace/load", files={"file": ("ws.zip", big)})
        assert raw.status_code == 413 and multipart.status_code == 413
        assert tree(ghost.home / "sandbox") == {"keep.txt": hashlib.sha256(b"keep").hexdigest()}
        assert tmp_leftovers(ghost) == []


def test_workspace_routes_need_the_key(server: GhostServer) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as anon:
        assert anon.post("/api/workspace/save").status_code == 401
        assert anon.post("/api/workspace/load", content=good_archive(), headers=ZIP_TYPE).status_code == 401
