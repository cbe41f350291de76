"""Saves are bounded by what they read (issue 21): apparent sizes against the archive cap before
reading (sparse files included), a file that grows during a save cut or refused, a refused save
over before it read much. Checked by counts (the bytes Ghost's process read, from
/proc/<pid>/io), never by wall-clock times."""

from __future__ import annotations

import io
import os
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ghost.testing.fake_upstream import FakeUpstream
from ghost.testing.server import GhostServer

MiB = 1024 * 1024
SAVE_CAP = 500 * MiB  # --workspace-save-max-bytes' default: the tests use the defaults
TIMEOUT = 120


@pytest.fixture(scope="module")
def server(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    with GhostServer("--upstream-url", upstream.url, home=tmp_path_factory.mktemp("save-bounds")) as ghost:
        yield ghost


@pytest.fixture()
def sandbox(server: GhostServer) -> Iterator[Path]:
    root = server.home / "sandbox"
    yield root
    for child in root.iterdir():
        child.unlink()


def bytes_read(server: GhostServer) -> int:
    """All bytes Ghost's process has read so far (files and sockets, every thread)."""
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/<pid>/io")


def save(server: GhostServer) -> httpx.Response:
    return httpx.post(server.url + "/api/workspace/save", headers=server.headers, timeout=TIMEOUT)


def test_the_read_count_sees_a_save_read_its_files(server: GhostServer, sandbox: Path) -> None:
    (sandbox / "real.bin").write_bytes(os.urandom(32 * MiB))
    before = bytes_read(server)
    response = save(server)
    assert response.status_code == 200, response.text[:300]
    assert bytes_read(server) - before >= 32 * MiB  # the probe counts what a save reads


def test_sparse_files_over_the_cap_are_refused_before_any_is_read(server: GhostServer, sandbox: Path) -> None:
    for number in range(40):
        with open(sandbox / f"sparse-{number:02}.bin", "wb") as handle:
            handle.truncate(256 * MiB)  # 10 GiB of apparent size, nothing on disk
    (sandbox / "small.txt").write_text("kept")
    before = bytes_read(server)
    response = save(server)
    assert response.status_code == 413, response.text[:300]
    error = response.json()["error"]
    assert error["type"] == "request_too_large" and "apparent sizes" in error["message"]
    assert bytes_read(server) - before < 16 * MiB  # none of the 10 GiB was read
    # the workspace is not stuck: a load or another save goes on at once
    for path in sandbox.glob("sparse-*"):
        path.unlink()
    assert save(server).status_code == 200


def test_sparse_files_under_the_cap_are_saved_whole(server: GhostServer, sandbox: Path) -> None:
    with open(sandbox / "holes.bin", "wb") as handle:
        handle.truncate(64 * MiB)
        handle.seek(32 * MiB)
        handle.write(b"middle")
    response = save(server)
    assert response.status_code == 200, response.text[:300]
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        data = archive.read("sandbox/holes.bin")
    assert len(data) == 64 * MiB and data[32 * MiB:32 * MiB + 6] == b"middle"


class Grower:
    """Keeps making a file in the sandbox longer (sparse: its apparent size, not the disk) until stopped."""

    STEP = 64 * MiB
    LIMIT = 1 << 42  # 4 TiB apparent: far more than any save could read

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self.stopped = threading.Event()
        self.finished = threading.Event()  # the grower reached LIMIT by itself
        self.path.write_bytes(b"")
        self.thread = threading.Thread(target=self._grow, daemon=True)

    def _grow(self) -> None:
        with open(self.path, "r+b") as handle:
            while not self.stopped.is_set():
                if self.size >= self.LIMIT:
                    self.finished.set()
                    return
                self.size += self.STEP
                handle.truncate(self.size)
                self.stopped.wait(0.001)  # ~64 GiB/s: LIMIT is a minute away, reading it days

    def __enter__(self) -> "Grower":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(30)


def test_a_file_growing_during_a_save_cannot_keep_it_going(server: GhostServer, sandbox: Path) -> None:
    before = bytes_read(server)
    with Grower(sandbox / "growing.bin") as grower:
        response = save(server)
        still_growing = not grower.finished.is_set()  # the save ended while the file kept growing
        final = grower.size
    assert still_growing
    assert response.status_code in (200, 413), response.text[:300]  # cut, or refused
    assert bytes_read(server) - before < SAVE_CAP + 64 * MiB
    if response.status_code == 200:
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            assert archive.getinfo("sandbox/growing.bin").file_size < final


def opened_by(pid: int, path: Path) -> bool:
    """Whether the process has `path` open (one of its fds links to it)."""
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) == str(path):
                return True
        except OSError:
            continue
    return False


def test_a_file_that_grows_after_the_save_opened_it_is_cut_at_its_size_then(server: GhostServer,
                                                                            sandbox: Path) -> None:
    path = sandbox / "grows-later.bin"
    start = 256 * MiB  # under the cap: the save reads it, which takes a while even on a fast machine
    with open(path, "wb") as handle:
        handle.truncate(start)
    assert server.process is not None
    opened = threading.Event()
    stop = threading.Event()
    grown = [start]

    def watch_then_grow() -> None:
        while not opened_by(server.process.pid, path):  # type: ignore[union-attr]
            if stop.wait(0.002):
                return  # the save ended before its open was seen: the test fails below
        opened.set()
        with open(path, "r+b") as handle:
            while not stop.is_set() and grown[0] < Grower.LIMIT:
                grown[0] += Grower.STEP
                handle.truncate(grown[0])

    thread = threading.Thread(target=watch_then_grow, daemon=True)
    thread.start()
    try:
        response = save(server)
    finally:
        stop.set()
        thread.join(30)
    assert opened.is_set()  # the file grew only once Ghost had it open
    assert response.status_code == 200, response.text[:300]
    assert grown[0] > start
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.getinfo("sandbox/grows-later.bin").file_size == start  # its size when opened
