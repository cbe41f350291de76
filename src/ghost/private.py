"""Ghost's state is private to Ghost's user, whatever the umask: folders 0700, files 0600.

GHOST_HOME holds the database (history, scratchpad), the API key, logs and temp space; on a
shared machine none of it is for other local users. The modes are set explicitly (a umask of
000 must not widen them) and tightened on what an older version or a restore left wider.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import BinaryIO

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create the folder (and missing parents) if needed and make it 0700; returns it."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    info = os.lstat(path)
    if stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) != DIR_MODE:
        os.chmod(path, DIR_MODE)
    return path


def tighten_file(path: Path) -> None:
    """An existing regular file (not a link) becomes 0600; a missing one is left alone."""
    with contextlib.suppress(FileNotFoundError):
        info = os.lstat(path)
        if stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) != FILE_MODE:
            os.chmod(path, FILE_MODE)


def create_private_file(path: Path) -> None:
    """Make sure `path` exists as a 0600 file before something else (SQLite) opens it: files
    derived from it (the -wal and -shm files) take its mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def open_private_append(path: Path) -> BinaryIO:
    """A log file opened for appending, 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    if stat.S_IMODE(os.fstat(fd).st_mode) != FILE_MODE:
        os.fchmod(fd, FILE_MODE)
    return os.fdopen(fd, "ab")
