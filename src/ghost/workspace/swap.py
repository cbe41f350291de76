"""Renames that can be undone: how a staged workspace replaces the live one.

Every change a load makes to the live sandbox is a rename recorded in a `RenameJournal`; if any
later step fails (a rename, the database restore) the journal plays the renames backwards and the
old workspace is back as it was. Renames within one filesystem are atomic, and the sandbox itself
is replaced with one `renameat2(RENAME_EXCHANGE)`, so there is no moment at which the sandbox
path is missing. Where the kernel or filesystem lacks renameat2, the fallback is three plain
renames (a brief window without the sandbox path, still undoable).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ghost.sandbox import fs

_AT_FDCWD = -100


def _renameat2_or_none(src: Path, dst: Path, flags: int) -> bool:
    """True if renameat2 did it; False if it is not available here (caller falls back)."""
    return fs.renameat2(_AT_FDCWD, src, _AT_FDCWD, dst, flags)


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename, but never over something that exists (FileExistsError)."""
    if _renameat2_or_none(src, dst, fs.RENAME_NOREPLACE):
        return
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "destination exists", str(dst))
    os.rename(src, dst)


def exchange(a: Path, b: Path) -> None:
    """Swap two paths atomically where the kernel allows, else with three renames."""
    if _renameat2_or_none(a, b, fs.RENAME_EXCHANGE):
        return
    parked = a.with_name(a.name + ".ghost-swap")
    os.rename(a, parked)
    try:
        os.rename(b, a)
    except OSError:
        os.rename(parked, a)
        raise
    os.rename(parked, b)


class RenameJournal:
    """Renames and exchanges, remembered so that `undo` can reverse them all."""

    def __init__(self) -> None:
        self._done: list[tuple[str, Path, Path]] = []

    def rename(self, src: Path, dst: Path) -> None:
        rename_noreplace(src, dst)
        self._done.append(("rename", src, dst))

    def exchange(self, a: Path, b: Path) -> None:
        exchange(a, b)
        self._done.append(("exchange", a, b))

    def undo(self) -> None:
        """Reverse every recorded step, newest first."""
        while self._done:
            kind, first, second = self._done.pop()
            if kind == "exchange":
                exchange(first, second)
            else:
                rename_noreplace(second, first)
