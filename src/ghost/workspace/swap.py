"""Renames that can be undone: how a staged workspace replaces the live one.

Every change a load makes to the live sandbox is a rename recorded in a `RenameJournal`; if any
later step fails (a rename, the database restore) the journal plays the renames backwards and the
old workspace is back as it was. Renames within one filesystem are atomic, and the sandbox itself
is replaced with one `renameat2(RENAME_EXCHANGE)`, so there is no moment at which the sandbox
path is missing. Where the kernel or filesystem lacks renameat2, the fallback is three plain
renames (a brief window without the sandbox path, still undoable).
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2


def _load_renameat2():  # type: ignore[no-untyped-def]
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()


def _renameat2_or_none(src: Path, dst: Path, flags: int) -> bool:
    """True if renameat2 did it; False if it is not available here (caller falls back)."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(err, os.strerror(err), str(src), None, str(dst))


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename, but never over something that exists (FileExistsError)."""
    if _renameat2_or_none(src, dst, _RENAME_NOREPLACE):
        return
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "destination exists", str(dst))
    os.rename(src, dst)


def exchange(a: Path, b: Path) -> None:
    """Swap two paths atomically where the kernel allows, else with three renames."""
    if _renameat2_or_none(a, b, _RENAME_EXCHANGE):
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
