"""Check an uploaded workspace archive before anything is extracted.

Refused (400 `ArchiveRejected`): names that are absolute, carry a drive letter, a backslash, a NUL
or a `..` (the same rules as every sandbox path, `split_relative`); links, devices, FIFOs and any
other non-regular file, read from the file-type bits of the Unix mode in the external attributes;
encrypted entries; duplicate names; a name used both as a file and as a folder.
Refused (413 `LimitExceeded`): more entries than allowed, or declared sizes adding up past the
unpacked cap. Declared sizes can lie, so unpacking counts real bytes again (`ghost.workspace.stage`).
"""

from __future__ import annotations

import stat
import zipfile
from dataclasses import dataclass
from enum import Enum
from typing import BinaryIO

from ghost.errors import ArchiveRejected, LimitExceeded, UnsafePath
from ghost.sandbox.paths import split_relative
from ghost.workspace.layout import SANDBOX_DIR, SESSION_FILE, SKILLS_DIR

_UNIX = 3  # ZipInfo.create_system for archives made on Unix
_ENCRYPTED = 0x1


class Area(Enum):
    SESSION = "session"
    SANDBOX = "sandbox"
    SKILLS = "skills"
    OTHER = "other"  # checked and counted, then ignored


@dataclass(frozen=True)
class Limits:
    max_entries: int
    max_unpacked_bytes: int


@dataclass(frozen=True)
class Entry:
    info: zipfile.ZipInfo
    area: Area
    parts: tuple[str, ...]  # path inside its area
    is_dir: bool
    executable: bool


def check_archive(archive: zipfile.ZipFile, limits: Limits) -> list[Entry]:
    """The archive's entries, classified, or an error naming the first problem."""
    infos = archive.infolist()
    if len(infos) > limits.max_entries:
        raise LimitExceeded(f"archive has {len(infos)} entries; the limit is {limits.max_entries}")
    declared = sum(info.file_size for info in infos)
    if declared > limits.max_unpacked_bytes:
        raise LimitExceeded(
            f"archive unpacks to {declared} bytes; the limit is {limits.max_unpacked_bytes}"
        )
    entries = [classify(info) for info in infos]
    check_layout(entries)
    return entries


def classify(info: zipfile.ZipInfo) -> Entry:
    name = info.orig_filename
    try:
        parts = tuple(split_relative(name))
    except UnsafePath as exc:
        raise ArchiveRejected(f"unsafe entry name {name!r}: {exc.message}") from exc
    if not parts:
        raise ArchiveRejected(f"entry with an empty name {name!r}")
    if info.flag_bits & _ENCRYPTED:
        raise ArchiveRejected(f"entry {name!r} is encrypted")
    is_dir = _entry_kind(info)
    area, inner = _area_of(parts, is_dir)
    executable = info.create_system == _UNIX and bool((info.external_attr >> 16) & 0o111)
    return Entry(info=info, area=area, parts=inner, is_dir=is_dir, executable=executable)


def _entry_kind(info: zipfile.ZipInfo) -> bool:
    """True for a folder, False for a regular file; ArchiveRejected for anything else."""
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    # Any archiver may store a Unix mode; trust its file-type bits whatever create_system says.
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        what = "a symbolic link" if kind == stat.S_IFLNK else "a special file"
        raise ArchiveRejected(f"entry {info.orig_filename!r} is {what}; only files and folders are allowed")
    return kind == stat.S_IFDIR or info.orig_filename.endswith("/")


def _area_of(parts: tuple[str, ...], is_dir: bool) -> tuple[Area, tuple[str, ...]]:
    head, rest = parts[0], parts[1:]
    if head == SESSION_FILE and not rest and not is_dir:
        return Area.SESSION, ()
    if head == SANDBOX_DIR:
        # An older or hand-made archive may keep skills inside sandbox/; treat them as skills.
        if rest[:1] == (SKILLS_DIR,):
            return Area.SKILLS, rest[1:]
        return Area.SANDBOX, rest
    if head == SKILLS_DIR:
        return Area.SKILLS, rest
    return Area.OTHER, rest


def check_layout(entries: list[Entry]) -> None:
    """No name twice, and no name that is a file in one entry and a folder in another."""
    files: set[tuple[Area, tuple[str, ...]]] = set()
    folders: set[tuple[Area, tuple[str, ...]]] = set()
    for entry in entries:
        if entry.area is Area.OTHER or not entry.parts and entry.area is not Area.SESSION:
            continue
        key = (entry.area, entry.parts)
        if key in files or (not entry.is_dir and key in folders):
            raise ArchiveRejected(f"entry {entry.info.orig_filename!r} appears twice or clashes with a folder")
        (folders if entry.is_dir else files).add(key)
        folders.update((entry.area, entry.parts[:i]) for i in range(1, len(entry.parts)))
    clash = files & folders
    if clash:
        area, parts = sorted(clash, key=str)[0]
        raise ArchiveRejected(f"'{'/'.join(parts)}' is both a file and a folder in the archive")


# --- the central directory, counted before zipfile reads it ---------------------------------------
# zipfile builds a ZipInfo object per central-directory record, however many there are: a 100 MB
# upload of tiny records would cost gigabytes of memory before `check_archive` could count them.
# So the records are first counted here, straight from the bytes, stopping past the cap.

_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_LOCATOR_SIZE = 20
_ZIP64_EOCD = b"PK\x06\x06"
_ZIP64_EOCD_SIZE = 56
_CENTRAL_HEADER = b"PK\x01\x02"
_CENTRAL_HEADER_SIZE = 46
_MAX_COMMENT = 65535


def count_entries(fp: BinaryIO, max_entries: int) -> int:
    """Central-directory records in the zip `fp`: ArchiveRejected if it is not a zip,
    LimitExceeded as soon as the count passes `max_entries`."""
    cd_end, cd_size = _central_directory_bounds(fp)
    position = cd_end - cd_size
    if position < 0:
        raise ArchiveRejected("not a valid zip archive (central directory out of bounds)")
    count = 0
    fp.seek(position)
    while position < cd_end:
        header = fp.read(_CENTRAL_HEADER_SIZE)
        if len(header) < _CENTRAL_HEADER_SIZE or header[:4] != _CENTRAL_HEADER:
            raise ArchiveRejected("not a valid zip archive (bad central directory)")
        count += 1
        if count > max_entries:
            raise LimitExceeded(f"archive has more than {max_entries} entries")
        variable = sum(int.from_bytes(header[i:i + 2], "little") for i in (28, 30, 32))
        position += _CENTRAL_HEADER_SIZE + variable
        fp.seek(position)
    return count


def _central_directory_bounds(fp: BinaryIO) -> tuple[int, int]:
    """(where the central directory ends, its size), read from the end-of-archive records."""
    fp.seek(0, 2)
    size = fp.tell()
    tail_len = min(size, _EOCD_SIZE + _MAX_COMMENT)
    fp.seek(size - tail_len)
    tail = fp.read(tail_len)
    at = tail.rfind(_EOCD)
    if at < 0 or tail_len - at < _EOCD_SIZE:
        raise ArchiveRejected("not a zip archive (no end-of-archive record; truncated?)")
    eocd_at = size - tail_len + at
    cd_size = int.from_bytes(tail[at + 12:at + 16], "little")
    locator_at = eocd_at - _ZIP64_LOCATOR_SIZE
    if locator_at >= _ZIP64_EOCD_SIZE:
        fp.seek(locator_at)
        if fp.read(4) == _ZIP64_LOCATOR:
            # As zipfile does: the zip64 record sits right before its locator.
            record_at = locator_at - _ZIP64_EOCD_SIZE
            fp.seek(record_at)
            record = fp.read(_ZIP64_EOCD_SIZE)
            if record[:4] != _ZIP64_EOCD:
                raise ArchiveRejected("not a valid zip archive (bad zip64 end record)")
            return record_at, int.from_bytes(record[40:48], "little")
    return eocd_at, cd_size
