"""Faults against a real Ghost: a broken upstream stream, SIGKILL mid-write, a full disk, a missing
sandbox backend, and secrets in the log. (Upstream death, HTML, non-200 and hangs are in
test_agent_turn.py.)"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from ghost.testing.fake_upstream import FakeUpstream, Reply
from capabilities import require
from ghost.testing.server import GhostServer, no_bundled_model

USER = [{"role": "user", "content": "hi"}]
FIRST = 'data: {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "partial"}}]}\n\n'


@pytest.fixture(scope="module")
def server(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    with GhostServer("--upstream-url", upstream.url, "--sandbox-backend", "process",
                     home=tmp_path_factory.mktemp("faults-home")) as ghost:
        yield ghost


def chat(server: GhostServer, path: str = "/v1/chat/completions", **body: object) -> httpx.Response:
    return httpx.post(server.url + path, headers=server.headers, timeout=30,
                      json={"model": "fake-model", "messages": USER, **body})


def still_serves(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="fine again"))
    response = chat(server)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "fine again"


# --- 1. a broken upstream stream ---------------------------------------------------------------------

BEFORE_FIRST_BYTE = {
    "truncated line, then the connection breaks": Reply(raw_stream='data: {"choi', raw_then_break=True),
    "truncated line, then the stream ends": Reply(raw_stream='data: {"choi'),
    "garbage bytes": Reply(raw_stream="data: \x00\x01\udcff\udcfe not json at all\n\n"),
    "garbage lines without data:": Reply(raw_stream="\udcff\udcfe\x07garbage\n\nmore garbage\n"),
    "JSON of the wrong shape": Reply(raw_stream='data: {"choices": [{"delta": "oops"}]}\n\n'),
    "choices not a list": Reply(raw_stream='data: {"choices": 5}\n\n'),
    "bad tool-call index": Reply(raw_stream='data: {"choices": [{"delta": {"tool_calls": [{"index": "x"}]}}]}\n\n'),
}


@pytest.mark.parametrize("case", list(BEFORE_FIRST_BYTE))
@pytest.mark.parametrize("stream", [True, False])
def test_broken_stream_before_any_content_is_a_clean_502(case: str, stream: bool, server: GhostServer,
                                                         upstream: FakeUpstream) -> None:
    upstream.script(BEFORE_FIRST_BYTE[case])
    response = chat(server, stream=stream)
    assert response.status_code == 502, response.text
    assert response.json()["error"]["type"].startswith("upstream")
    still_serves(server, upstream)


AFTER_FIRST_BYTE = {
    "truncated line": Reply(raw_stream=FIRST + 'data: {"choi', raw_then_break=True),
    "garbage bytes": Reply(raw_stream=FIRST + "data: \udcff\udcfe{{{ not json\n\n"),
    "JSON of the wrong shape": Reply(raw_stream=FIRST + 'data: {"choices": ["x"]}\n\n'),
}


@pytest.mark.parametrize("case", list(AFTER_FIRST_BYTE))
def test_broken_stream_after_content_is_an_in_band_error(case: str, server: GhostServer,
                                                        upstream: FakeUpstream) -> None:
    upstream.script(AFTER_FIRST_BYTE[case])
    response = chat(server, stream=True)
    assert response.status_code == 200
    blocks = [b for b in response.text.split("\n\n") if b and not b.startswith(":")]
    first = [json.loads(b.split("data: ", 1)[1]) for b in blocks[:-2]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in first) == "partial"
    assert blocks[-2].startswith("event: error\ndata: ")
    assert json.loads(blocks[-2].split("data: ", 1)[1])["error"]["type"].startswith("upstream")
    assert blocks[-1] == "data: [DONE]"
    still_serves(server, upstream)


@pytest.mark.parametrize("stream", [True, False])
def test_a_connection_broken_after_done_still_gives_the_whole_reply(stream: bool, server: GhostServer,
                                                                    upstream: FakeUpstream) -> None:
    """[DONE] ends the reply: the body's end is read only so the connection can be reused, and a
    break there is no failure of the reply."""
    upstream.script(Reply(raw_stream=FIRST + "data: [DONE]\n\n", raw_then_break=True))
    response = chat(server, stream=stream)
    assert response.status_code == 200, response.text
    if stream:
        blocks = [b for b in response.text.split("\n\n") if b and not b.startswith(":")]
        assert not any(b.startswith("event: error") for b in blocks), response.text
        chunks = [json.loads(b.split("data: ", 1)[1]) for b in blocks[:-1]]
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "partial"
        assert blocks[-1] == "data: [DONE]"
    else:
        assert response.json()["choices"][0]["message"]["content"] == "partial"
    still_serves(server, upstream)


def test_broken_stream_after_content_in_ndjson(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(AFTER_FIRST_BYTE["garbage bytes"])
    response = chat(server, path="/api/chat")
    lines = [json.loads(line) for line in response.text.splitlines() if line]
    assert lines[0]["message"]["content"] == "partial"
    assert set(lines[-1]) == {"error"} and "malformed" in lines[-1]["error"]
    assert "internal" not in response.text
    still_serves(server, upstream)


# --- 3. a full disk ----------------------------------------------------------------------------------

DISK_MB = 20


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 20 MB tmpfs: a real filesystem that fills up (the tests run as root here)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(disk)],
                            capture_output=True)
    require("tmpfs", result.returncode == 0, f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def tmp_leftovers(ghost: GhostServer) -> list[str]:
    return sorted(p.name for p in (ghost.home / ".sandbox.ghost-tmp").iterdir())


def integrity(home: Path) -> str:
    with contextlib.closing(sqlite3.connect(home / "ghost.db", timeout=10)) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def assert_insufficient_storage(response: httpx.Response) -> None:
    assert response.status_code == 507, response.text
    assert response.json()["error"]["type"] == "insufficient_storage"
    assert "disk space" in response.json()["error"]["message"]


def test_a_full_disk_during_an_upload_is_507_and_leaves_nothing(small_disk: Path, upstream: FakeUpstream) -> None:
    with GhostServer("--sandbox-backend", "process", *no_bundled_model(upstream.url), home=small_disk) as ghost, \
            httpx.Client(base_url=ghost.url, headers=ghost.headers, timeout=60) as http:
        sandbox = ghost.home / "sandbox"
        (sandbox / "keep.txt").write_text("kept")
        free_before = free_bytes(small_disk)
        response = http.post("/api/upload", files={"file": ("big.bin", os.urandom(free_before + 4 * 2**20))})
        assert_insufficient_storage(response)
        assert sorted(p.name for p in sandbox.iterdir()) == ["keep.txt"]
        assert tmp_leftovers(ghost) == []
        assert free_bytes(small_disk) >= free_before - 2**20  # the partial upload's space came back
        # Ghost keeps serving, and an upload that fits still works.
        assert http.post("/api/upload", files={"file": ("small.bin", b"x" * 1000)}).status_code == 200
        assert (sandbox / "small.bin").read_bytes() == b"x" * 1000
        assert (sandbox / "keep.txt").read_text() == "kept"
        assert integrity(ghost.home) == "ok"


def test_a_full_disk_during_a_save_is_507_and_leaves_nothing(small_disk: Path, upstream: FakeUpstream) -> None:
    with GhostServer("--sandbox-backend", "process", *no_bundled_model(upstream.url), home=small_disk) as ghost, \
            httpx.Client(base_url=ghost.url, headers=ghost.headers, timeout=60) as http:
        sandbox = ghost.home / "sandbox"
        big = os.urandom(12 * 2**20)  # does not compress: the archive needs more than is left
        (sandbox / "big.bin").write_bytes(big)
        free_before = free_bytes(small_disk)
        assert free_before < len(big)
        assert_insufficient_storage(http.post("/api/workspace/save"))
        assert tmp_leftovers(ghost) == []
        assert free_bytes(small_disk) >= free_before - 2**20  # the unnamed archive file is gone
        assert hashlib.sha256((sandbox / "big.bin").read_bytes()).digest() == hashlib.sha256(big).digest()
        assert integrity(ghost.home) == "ok"
        # Once there is room, a save works again.
        (sandbox / "big.bin").unlink()
        (sandbox / "small.txt").write_text("small")
        assert http.post("/api/workspace/save").status_code == 200


def test_a_full_disk_while_a_load_unpacks_is_507_and_changes_nothing(small_disk: Path, upstream: FakeUpstream) -> None:
    with GhostServer("--sandbox-backend", "process", *no_bundled_model(upstream.url), home=small_disk) as ghost, \
            httpx.Client(base_url=ghost.url, headers=ghost.headers, timeout=60) as http:
        sandbox = ghost.home / "sandbox"
        (sandbox / "new.bin").write_bytes(os.urandom(8 * 2**20))
        archive = http.post("/api/workspace/save").content
        # The archive's temp file is closed just after its last byte went out: until then it
        # holds 8 MB of the disk.
        assert wait_until(lambda: not open_temp_files(ghost), timeout=30), open_temp_files(ghost)
        (sandbox / "new.bin").unlink()
        (sandbox / "old.txt").write_text("old")
        # Room for the uploaded archive in the temp folder and 4 MB more: unpacking it (8 MB) does
        # not fit. Measured, not assumed: the database and the log take their share of the disk.
        filler = free_bytes(small_disk) - len(archive) - 4 * 2**20
        assert filler > 0, f"{free_bytes(small_disk)} bytes free: too little for the test's archive"
        (sandbox / "filler.bin").write_bytes(os.urandom(filler))
        before = tree(sandbox)
        assert_insufficient_storage(http.post("/api/workspace/load", content=archive,
                                              headers={"content-type": "application/zip"}))
        assert tree(sandbox) == before
        assert tmp_leftovers(ghost) == []
        assert integrity(ghost.home) == "ok"
        assert http.get("/api/health").status_code == 200


def open_temp_files(ghost: GhostServer) -> list[str]:
    """Files the server process holds open in its temp folder (unnamed ones show as '#n (deleted)')."""
    assert ghost.process is not None
    targets = []
    for fd in Path(f"/proc/{ghost.process.pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):
            targets.append(os.readlink(fd))
    return [t for t in targets if ".ghost-tmp" in t]


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout  # a hang guard only
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def tree(root: Path) -> dict[str, str]:
    """Every path below root: a file's sha256 or 'dir'."""
    return {p.relative_to(root).as_posix(): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


# --- 4. the sandbox backend missing at start --------------------------------------------------------

def broken_bwrap(folder: Path) -> str:
    """A PATH whose only bwrap fails the way an unprivileged container's does."""
    folder.mkdir()
    script = folder / "bwrap"
    script.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    script.chmod(0o755)
    return str(folder)


@pytest.mark.parametrize("path", ["no bwrap", "a bwrap that cannot run"])
def test_auto_without_bubblewrap_serves_but_refuses_code_loudly(path: str, tmp_path: Path,
                                                               upstream: FakeUpstream) -> None:
    # Isolation is never lost silently (issue 21): no fallback to the unisolated process backend.
    search = str(tmp_path / "empty") if path == "no bwrap" else broken_bwrap(tmp_path / "bin")
    with GhostServer(*no_bundled_model(upstream.url), home=tmp_path / "home", env={"PATH": search}) as ghost:
        report = httpx.get(ghost.url + "/api/health", headers=ghost.headers).json()
        log = ghost.log()
    sandbox = report["sandbox"]
    assert sandbox["backend"] == "none" and sandbox["available"] is False, sandbox
    assert report["status"] == "degraded", report
    assert "bubblewrap cannot run here" in log and "REFUSED" in log
    assert "falling back" not in log and "does NOT isolate" not in log
    if path == "a bwrap that cannot run":
        assert "Permission denied" in log and "Permission denied" in sandbox["reason"]  # bubblewrap's own words


@pytest.mark.parametrize("path", ["no bwrap", "a bwrap that cannot run"])
def test_explicit_bwrap_that_cannot_run_refuses_to_start(path: str, tmp_path: Path) -> None:
    search = str(tmp_path / "empty") if path == "no bwrap" else broken_bwrap(tmp_path / "bin")
    ghost = GhostServer("--sandbox-backend", "bwrap", home=tmp_path / "home", env={"PATH": search})
    with pytest.raises(RuntimeError, match="ghost exited with 3"):
        ghost.start()
    log = ghost.log()
    assert "sandbox_backend is 'bwrap' but bubblewrap cannot run here" in log
    assert "not installed" in log if path == "no bwrap" else "Permission denied" in log
    assert "falling back" not in log


# --- 5. no secret in the log --------------------------------------------------------------------------

CLIENT_KEY = "client-Key-7f3a9c2e51b84d06"
UPSTREAM_KEY = "upstream-Key-0d9e8c7b6a5f4e3d"


def test_no_secret_is_ever_logged_and_auth_failures_name_the_client(upstream: FakeUpstream, tmp_path: Path) -> None:
    ghost = GhostServer("--upstream-url", upstream.url, "--upstream-api-key", UPSTREAM_KEY, "--log-level", "debug",
                        api_key=CLIENT_KEY, home=tmp_path / "home")
    with ghost, httpx.Client(base_url=ghost.url, timeout=30) as http:
        good, bearer = {"X-Ghost-Key": CLIENT_KEY}, {"Authorization": f"Bearer {CLIENT_KEY}"}
        upstream.script(Reply(content="one"), Reply(status=500), Reply(content="three"))
        assert http.post("/v1/chat/completions", headers=good, json={"model": "fake-model", "messages": USER}).status_code == 200
        assert http.post("/api/chat", headers=bearer, json={"model": "fake-model", "messages": USER}).status_code == 502
        assert http.post("/v1/chat/completions", headers=good,
                         json={"model": "fake-model", "messages": USER, "stream": True}).status_code == 200
        assert http.get("/v1/models", headers=bearer).status_code == 200
        assert http.post("/v1/chat/completions", headers=good, content=b"{not json").status_code == 400
        # Failed auth, with keys that contain the real one, so logging them would leak it.
        assert http.get("/v1/models", headers={"X-Ghost-Key": CLIENT_KEY + "x"}).status_code == 401
        assert http.get("/api/sessions", headers={"Authorization": f"Bearer {UPSTREAM_KEY}"}).status_code == 401
        assert http.post("/api/chat", json={"model": "fake-model", "messages": USER}).status_code == 401
        assert http.get("/api/health", headers=good).status_code == 200
    log = ghost.log_path.read_text(errors="replace")  # all of it, not the tail
    assert CLIENT_KEY not in log and UPSTREAM_KEY not in log
    assert "auth failed: GET /v1/models from 127.0.0.1 (wrong key)" in log
    assert "auth failed: GET /api/sessions from 127.0.0.1 (wrong key)" in log
    assert "auth failed: POST /api/chat from 127.0.0.1 (no key)" in log
    # The keys were really in use: the upstream got its own key, never the client's.
    sent = [r["headers"].get("authorization") for r in upstream.chat_requests()]
    assert sent and set(sent) == {f"Bearer {UPSTREAM_KEY}"}


# --- 2. SIGKILL in the middle of writes ------------------------------------------------------------

def rows(home: Path, table: str) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{home / 'ghost.db'}?mode=ro", uri=True, timeout=10)) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def wait_for(condition, what: str, timeout: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout  # a hang guard, not a timing assertion: CI machines are loaded
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def in_background(fn, *args: object) -> threading.Thread:  # type: ignore[no-untyped-def]
    def quietly() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the server is killed under it
            fn(*args)

    thread = threading.Thread(target=quietly, daemon=True)
    thread.start()
    return thread


def assert_state_readable(ghost: GhostServer, upstream: FakeUpstream) -> None:
    """After a restart: the database is sound and Ghost reads its scratchpad and history."""
    assert integrity(ghost.home) == "ok"
    with httpx.Client(base_url=ghost.url, headers=ghost.headers, timeout=30) as http:
        sessions = http.get("/api/sessions").json()["sessions"]
        assert len(sessions) == rows(ghost.home, "history")
        for session in sessions:
            stored = http.get(f"/api/sessions/{session['id']}")
            assert stored.status_code == 200 and len(stored.json()["messages"]) == session["messages"]
        upstream.reset()
        upstream.script(Reply(content="", tool_calls=[{"name": "scratchpad_list", "arguments": {}}]),
                        Reply(content="listed"))
        reply = http.post("/v1/chat/completions", json={"model": "fake-model", "messages": USER})
        assert reply.status_code == 200, reply.text
    listed = upstream.chat_requests()[-1]["body"]["messages"][-1]["content"]
    keys = rows(ghost.home, "scratchpad")
    if keys:
        assert listed.count("\n") + 1 == keys  # one line per key, each read back
    else:
        assert "empty" in listed


def pad_round(i: int) -> Reply:
    return Reply(content="", tool_calls=[{"name": "scratchpad_set", "arguments": {"key": f"k{i}-{j}", "value": {"n": i, "text": "v" * 2000}}}
                                         for j in range(10)])


def test_sigkill_during_scratchpad_and_history_writes(upstream: FakeUpstream, tmp_path: Path) -> None:
    ghost = GhostServer("--upstream-url", upstream.url, "--sandbox-backend", "process", "--max-tool-rounds", "100",
                        home=tmp_path / "home").start()
    try:
        upstream.script(*(pad_round(i) for i in range(90)))
        stop = threading.Event()

        def turns(prefix: str) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                httpx.post(ghost.url + "/v1/chat/completions", headers={**ghost.headers, "X-Ghost-Session": f"{prefix}{n}"},
                           json={"model": "fake-model", "messages": [*USER, {"role": "assistant", "content": "x" * 5000}, *USER]},
                           timeout=30)

        threads = [in_background(turns, prefix) for prefix in ("a", "b", "c")]
        wait_for(lambda: rows(ghost.home, "scratchpad") >= 100 and rows(ghost.home, "history") >= 5, "writes")
        seen = rows(ghost.home, "scratchpad"), rows(ghost.home, "history")
        ghost.stop(signal.SIGKILL)
        stop.set()
        for thread in threads:
            thread.join(30)
        ghost.start()
        # Every commit another reader saw survived the kill.
        assert rows(ghost.home, "scratchpad") >= seen[0] and rows(ghost.home, "history") >= seen[1]
        assert_state_readable(ghost, upstream)
    finally:
        ghost.stop()


def make_files(root: Path, tag: str, count: int, size: int) -> None:
    for i in range(count):
        folder = root / f"{tag}-dir{i % 7}"
        folder.mkdir(exist_ok=True)
        (folder / f"{tag}-{i}.bin").write_bytes(os.urandom(size))


def wipe(root: Path) -> None:
    for child in root.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()


def home_leftovers(ghost: GhostServer) -> list[str]:
    """Anything in the home besides what Ghost keeps there (a parked sandbox, a half upload...)."""
    expected = {"sandbox", ".sandbox.ghost-tmp", "ghost.db", "ghost.db-wal", "ghost.db-shm", "server-test.log",
                "sandbox-tmp"}
    return sorted(p.name for p in ghost.home.iterdir() if p.name not in expected)


def temp_has(ghost: GhostServer, prefix: str) -> bool:
    with contextlib.suppress(OSError):
        for path in (ghost.home / ".sandbox.ghost-tmp").iterdir():
            if path.name.startswith(prefix) and (path.is_dir() and any(path.rglob("*.bin")) or path.stat().st_size > 0):
                return True
    return False


def frozen_in(ghost: GhostServer, in_phase: Callable[[], bool], past_phase: Callable[[], bool]) -> bool:
    """Stop Ghost (SIGSTOP) the first time `in_phase()` holds; True if it is still in that phase.

    While Ghost is stopped nothing moves, so the phase seen after the stop is the one the kill lands
    in. False if the phase was missed (`past_phase()` became true first, or was already true once
    Ghost stood still): the caller lets Ghost go on and tries again.
    """
    assert ghost.process is not None
    deadline = time.monotonic() + 60  # a hang guard only
    while not in_phase():
        if past_phase():
            return False
        assert time.monotonic() < deadline, "the phase never came"
        time.sleep(0.002)
    ghost.process.send_signal(signal.SIGSTOP)
    if in_phase() and not past_phase():
        return True
    ghost.process.send_signal(signal.SIGCONT)
    return False


def stage_has_files(ghost: GhostServer) -> bool:
    return temp_has(ghost, "stage-")


def load_workspace(ghost: GhostServer, archive: bytes, pause: float) -> threading.Thread:
    def load() -> None:
        chunks = (archive[i:i + 2**18] for i in range(0, len(archive), 2**18))
        with httpx.Client(timeout=60) as slow:
            slow.post(ghost.url + "/api/workspace/load", headers={**ghost.headers, "content-type": "application/zip"},
                      content=_paced(chunks, pause))

    return in_background(load)


# What the sandbox holds after a restart when the kill landed in each phase: before the swap the
# old workspace, once the sandbox was exchanged the new one, and never a mix.
EXPECTED_AFTER = {"receiving": "old", "unpacking": "old", "swapping": "new"}


@pytest.mark.parametrize("moment", ["receiving", "unpacking", "swapping"])
def test_sigkill_during_a_workspace_load_leaves_the_old_or_the_new_workspace(moment: str, upstream: FakeUpstream,
                                                                             tmp_path: Path) -> None:
    ghost = GhostServer("--upstream-url", upstream.url, "--sandbox-backend", "process", home=tmp_path / "home").start()
    sandbox = ghost.home / "sandbox"
    try:
        with httpx.Client(base_url=ghost.url, headers=ghost.headers, timeout=60) as http:
            make_files(sandbox, "new", 240, 40_000)
            new = tree(sandbox)
            archive = http.post("/api/workspace/save").content
        # Many small old files: removing the swapped-out old sandbox afterwards takes a while,
        # which keeps the "swapped, not yet finished" phase open long enough to stop Ghost in it.
        for _ in range(20):
            wipe(sandbox)
            make_files(sandbox, "old", 3000 if moment == "swapping" else 50, 1000)
            old = tree(sandbox)
            loader = load_workspace(ghost, archive, 0.02 if moment == "receiving" else 0)
            phase, past = phase_checks(moment, ghost, set(old), loader)
            if frozen_in(ghost, phase, past):
                break
            loader.join(60)  # missed it (a loaded machine): let this load finish and try again
        else:
            pytest.fail(f"never managed to stop Ghost while {moment}")
        ghost.stop(signal.SIGKILL)
        loader.join(30)
        ghost.start()
        after = tree(sandbox)
        expected = {"old": old, "new": new}[EXPECTED_AFTER[moment]]
        assert after == expected, (f"wanted the {EXPECTED_AFTER[moment]} workspace: {len(set(after) & set(old))} old "
                                   f"and {len(set(after) & set(new))} new paths")
        assert tmp_leftovers(ghost) == [] and home_leftovers(ghost) == []
        assert_state_readable(ghost, upstream)
    finally:
        ghost.stop()


def phase_checks(moment: str, ghost: GhostServer, old_names: set[str],
                 loader: threading.Thread) -> tuple[Callable[[], bool], Callable[[], bool]]:
    """(in the phase, past it) for a load's `moment`, as seen from outside Ghost."""
    sandbox = ghost.home / "sandbox"
    old_top = {name for name in old_names if "/" not in name}

    def swapped() -> bool:
        # The top folder's names only: a listing takes microseconds where the whole tree took
        # ~17 ms, so a poll lands inside a swap that is not atomic (the old tree deleted file by
        # file, then the new one renamed in) even when the deletion takes only a few polls.
        with contextlib.suppress(OSError):
            return set(os.listdir(sandbox)) != old_top
        return True

    if moment == "receiving":  # part of the archive on disk, nothing unpacked yet
        return (lambda: temp_has(ghost, "load-") and not stage_has_files(ghost)), (lambda: stage_has_files(ghost))

    def new_in_place() -> bool:  # the archive's top folders in the live sandbox: swapped in
        with contextlib.suppress(OSError):
            return any(name.startswith("new-") for name in os.listdir(sandbox))
        return False

    if moment == "unpacking":  # the archive's files unpacked (wherever the load puts them), the old sandbox live
        return (lambda: any(ghost.home.rglob("new-*.bin")) and not new_in_place()), new_in_place
    # swapping: the live sandbox exchanged, the load not finished (its staging folder still there)
    return (lambda: swapped() and stage_folder_exists(ghost)), (lambda: not loader.is_alive())


def stage_folder_exists(ghost: GhostServer) -> bool:
    with contextlib.suppress(OSError):
        return any(p.name.startswith("stage-") for p in (ghost.home / ".sandbox.ghost-tmp").iterdir())
    return False


def _paced(chunks: Iterator[bytes], pause: float) -> Iterator[bytes]:
    for chunk in chunks:
        yield chunk
        if pause:
            time.sleep(pause)


def test_sigkill_during_an_upload_leaves_no_partial_file(upstream: FakeUpstream, tmp_path: Path) -> None:
    ghost = GhostServer("--upstream-url", upstream.url, "--sandbox-backend", "process", home=tmp_path / "home").start()
    sandbox = ghost.home / "sandbox"
    try:
        (sandbox / "big.bin").write_bytes(b"the old big.bin")
        boundary = "faultsboundary"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode()

        def body() -> Iterator[bytes]:
            yield head
            for _ in range(200):  # 50 MB, paced so that the kill lands mid-way
                yield os.urandom(2**18)
                time.sleep(0.01)
            yield f"\r\n--{boundary}--\r\n".encode()

        def upload() -> None:
            httpx.post(ghost.url + "/api/upload", content=body(), timeout=60,
                       headers={**ghost.headers, "content-type": f"multipart/form-data; boundary={boundary}"})

        uploader = in_background(upload)
        wait_for(lambda: temp_has(ghost, "upload-"), "the upload to reach the disk")
        ghost.stop(signal.SIGKILL)
        uploader.join(30)
        ghost.start()
        assert (sandbox / "big.bin").read_bytes() == b"the old big.bin"
        assert sorted(p.name for p in sandbox.iterdir()) == ["big.bin"]
        assert tmp_leftovers(ghost) == [] and home_leftovers(ghost) == []
        with httpx.Client(base_url=ghost.url, headers=ghost.headers, timeout=30) as http:
            assert http.post("/api/upload", files={"file": ("big.bin", b"new")}).status_code == 200
        assert (sandbox / "big.bin").read_bytes() == b"new"
    finally:
        ghost.stop()
