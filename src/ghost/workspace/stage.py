"""Unpack a checked workspace archive into a staging folder (runs in a worker thread).

Nothing here touches the live workspace. The staging folder is Ghost's own, freshly made, so it
holds no links: files are created with O_EXCL under folders this code made. Unpacked bytes are
counted as they come out of the decompressor, whatever the archive declares, and unpacking stops
at the first byte past the cap.
"""

from __future__ import annotations

import os
import threading
import zipfile
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from ghost.errors import ArchiveRejected, LimitExceeded
from ghost.sandbox.root import give_tree
from ghost.workspace.layout import IO_BLOCK, disk_space
from ghost.workspace.state import SessionState, decode_session
from ghost.workspace.tasks import StopFlag
from ghost.workspace.zipcheck import Area, Entry, Limits, check_archive, count_entries

# Unpacking threads: inflating and writing release the GIL, so a second core helps.
EXTRACT_THREADS = min(4, os.cpu_count() or 1)
# What a damaged or hostile archive raises from zipfile/zlib while it is read.
_CORRUPT = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError)


@dataclass
class Staged:
    root: Path  # the staging folder; everything below is removed after the load
    state: SessionState
    sandbox_files: int = 0
    # Files per top-level skill item (a file, or a folder counted whole), for the load's file count.
    skill_files: Counter[str] = field(default_factory=Counter)

    @property
    def sandbox(self) -> Path:
        return self.root / "sandbox"

    @property
    def skills(self) -> Path:
        return self.root / "skills"


class _Budget:
    """Unpacked bytes so far, shared by the unpacking threads."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.used = 0
        self._lock = threading.Lock()

    def spend(self, n: int) -> None:
        with self._lock:
            self.used += n
            over = self.used > self.cap
        if over:
            raise LimitExceeded(f"archive unpacks to more than {self.cap} bytes")


def stage_archive(upload: Path, stage_root: Path, limits: Limits, session_cap: int, stop: StopFlag) -> Staged:
    """Check and unpack the archive at `upload` below `stage_root`; ArchiveRejected / LimitExceeded."""
    with open(upload, "rb") as raw:
        count_entries(raw, limits.max_entries)
        raw.seek(0)
        try:
            with zipfile.ZipFile(raw) as archive:
                return _stage(archive, stage_root, limits, session_cap, stop)
        except _CORRUPT as exc:
            raise ArchiveRejected(f"damaged or unsupported zip archive: {exc}") from exc


def _stage(archive: zipfile.ZipFile, stage_root: Path, limits: Limits, session_cap: int,
           stop: StopFlag) -> Staged:
    entries = check_archive(archive, limits)
    budget = _Budget(limits.max_unpacked_bytes)
    staged = Staged(root=stage_root, state=_read_session(archive, entries, session_cap, budget))
    staged.sandbox.mkdir()
    staged.skills.mkdir()
    wanted = [entry for entry in entries if entry.area in (Area.SANDBOX, Area.SKILLS) and entry.parts]
    files = [entry for entry in wanted if not entry.is_dir]
    try:
        for entry in wanted:
            target = _target(staged, entry)
            (target if entry.is_dir else target.parent).mkdir(parents=True, exist_ok=True)
        _extract_files(archive, files, staged, budget, stop)
    except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
        raise ArchiveRejected(f"entries clash with each other: {exc.filename}") from exc
    give_tree(staged.sandbox)  # sandboxed code must be able to change what it loaded
    staged.sandbox_files = sum(entry.area is Area.SANDBOX for entry in files)
    staged.skill_files = Counter(entry.parts[0] for entry in files if entry.area is Area.SKILLS)
    return staged


def _target(staged: Staged, entry: Entry) -> Path:
    return (staged.sandbox if entry.area is Area.SANDBOX else staged.skills).joinpath(*entry.parts)


def _extract_files(archive: zipfile.ZipFile, files: list[Entry], staged: Staged, budget: _Budget,
                   stop: StopFlag) -> None:
    """Unpack `files` in a few threads (zlib and file writes release the GIL); first error wins."""
    lanes = _balanced(files, EXTRACT_THREADS)
    failed = threading.Event()

    def run_lane(lane: list[Entry]) -> None:
        for entry in lane:
            if failed.is_set():
                return
            stop.check()
            _copy_out(archive, entry, _target(staged, entry), budget, stop)

    with ThreadPoolExecutor(len(lanes) or 1, thread_name_prefix="ghost-unzip") as pool:
        futures = [pool.submit(run_lane, lane) for lane in lanes]
        for future in as_completed(futures):
            if future.exception() is not None:
                failed.set()
    errors = [exc for future in futures if (exc := future.exception()) is not None]
    if errors:
        raise errors[0]


def _balanced(files: list[Entry], lanes: int) -> list[list[Entry]]:
    """Split entries into lanes of about equal unpacked size, keeping archive order in each."""
    result: list[list[Entry]] = [[] for _ in range(max(1, min(lanes, len(files))))]
    loads = [0] * len(result)
    for entry in sorted(files, key=lambda e: e.info.file_size, reverse=True):
        lightest = loads.index(min(loads))
        result[lightest].append(entry)
        loads[lightest] += entry.info.file_size + 4096  # a file costs something even when empty
    return [sorted(lane, key=lambda e: e.info.header_offset) for lane in result if lane]


def _read_session(archive: zipfile.ZipFile, entries: list[Entry], cap: int, budget: _Budget) -> SessionState:
    found = [entry for entry in entries if entry.area is Area.SESSION]
    if not found:
        raise ArchiveRejected("not a Ghost workspace archive: no session.json at its top level")
    data = bytearray()
    with archive.open(found[0].info) as source:
        while block := source.read(IO_BLOCK):
            data += block
            budget.spend(len(block))
            if len(data) > cap:
                raise LimitExceeded(f"session.json larger than {cap} bytes")
    return decode_session(bytes(data))


def _copy_out(archive: zipfile.ZipFile, entry: Entry, target: Path, budget: _Budget, stop: StopFlag) -> None:
    with disk_space("unpacked workspace"), archive.open(entry.info) as source, open(target, "xb") as sink:
        while block := source.read(IO_BLOCK):
            budget.spend(len(block))
            sink.write(block)
            stop.check()
    if entry.executable:
        target.chmod(0o755)
