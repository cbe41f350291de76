"""Save a tool result's full text in the sandbox, so a shortened copy can point the model to it.

Files go to `.ghost/outputs/<digest>.txt` — inside the sandbox, where the model's own code can
write too: either folder may be a symlink, a FIFO or a file by the time we get there. So every
step works on directory file descriptors: each component is opened (or made) relative to its
parent's fd with O_NOFOLLOW, and the file is created with O_CREAT|O_EXCL|O_NOFOLLOW — a name
planted in advance is never followed and never overwritten. The same text gets the same name, so
a result shortened on two turns reads the same (which keeps the upstream's prompt cache warm).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
from pathlib import Path

from ghost.sandbox.fs import give

OUTPUTS_DIR = (".ghost", "outputs")
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO must not block us


def output_name(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest() + ".txt"


def save_output(root: Path, text: str) -> str | None:
    """Write `text` under .ghost/outputs/; the sandbox-relative path, or None if it cannot be saved.

    Blocking: call it in a thread."""
    data = text.encode("utf-8", "replace")
    name = output_name(text)
    try:
        folder = _open_folders(root)
    except OSError:
        return None  # e.g. .ghost is a file or a symlink the model made: shorten without a copy
    try:
        if _holds(folder, name, data):
            return "/".join((*OUTPUTS_DIR, name))
        for candidate in (name, f"{name[:-4]}-{secrets.token_hex(4)}.txt"):
            with contextlib.suppress(FileExistsError):
                _create(folder, candidate, data)
                return "/".join((*OUTPUTS_DIR, candidate))
        return None
    except OSError:
        return None
    finally:
        os.close(folder)


def _open_folders(root: Path) -> int:
    fd = os.open(root, DIR_FLAGS)
    try:
        for part in OUTPUTS_DIR:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            child = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            give(child)  # the sandbox identity's, like everything Ghost makes in the sandbox
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _holds(folder: int, name: str, data: bytes) -> bool:
    """Whether `name` is already a regular file with exactly `data` (saved on an earlier turn)."""
    try:
        fd = os.open(name, READ_FLAGS, dir_fd=folder)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENXIO):
            return False
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size != len(data):
            return False
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read(len(data) + 1) == data
    finally:
        os.close(fd)


def _create(folder: int, name: str, data: bytes) -> None:
    fd = os.open(name, NEW_FILE_FLAGS, 0o644, dir_fd=folder)
    try:
        give(fd)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
