"""Unpack a checked workspace archive into a staging folder (runs in a worker thread).

Nothing here touches the live workspace. The staging folder is Ghost's own, freshly made, so it
holds no links: files are created with O_EXCL under folders this code made. Unpacked bytes are
counted as they come out of the decompressor, whatever the archive declares, and unpacking stops
at the first byte past the cap.
"""

from __future__ import annotations

import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ghost.errors import ArchiveRejected, LimitExceeded
from ghost.workspace.layout import IO_BLOCK
from ghost.workspace.state import SessionState, decode_session
from ghost.workspace.tasks import StopFlag
from ghost.workspace.zipcheck import Area, Entry, Limits, check_archive, count_entries

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
    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.used = 0

    def spend(self, n: int) -> None:
        self.used += n
        if self.used > self.cap:
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
    for entry in entries:
        if entry.area in (Area.SANDBOX, Area.SKILLS) and entry.parts:
            stop.check()
            _extract(archive, entry, staged, budget, stop)
    return staged


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


def _extract(archive: zipfile.ZipFile, entry: Entry, staged: Staged, budget: _Budget, stop: StopFlag) -> None:
    base = staged.sandbox if entry.area is Area.SANDBOX else staged.skills
    target = base.joinpath(*entry.parts)
    try:
        if entry.is_dir:
            target.mkdir(parents=True, exist_ok=True)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy_out(archive, entry, target, budget, stop)
    except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
        raise ArchiveRejected(f"entry {entry.info.orig_filename!r} clashes with another entry") from exc
    if entry.area is Area.SANDBOX:
        staged.sandbox_files += 1
    else:
        staged.skill_files[entry.parts[0]] += 1


def _copy_out(archive: zipfile.ZipFile, entry: Entry, target: Path, budget: _Budget, stop: StopFlag) -> None:
    with archive.open(entry.info) as source, open(target, "xb") as sink:
        while block := source.read(IO_BLOCK):
            budget.spend(len(block))
            sink.write(block)
            stop.check()
    if entry.executable:
        target.chmod(0o755)
