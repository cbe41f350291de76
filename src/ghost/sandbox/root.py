"""The sandbox root's owner and mode, set by Ghost — never left to what sandboxed code did.

Sandboxed code owns the sandbox root (when Ghost is root, as the sandbox identity), so it may
chmod it to 0 or chown it away between runs; bubblewrap would then fail to enter it on every
later run, and Ghost's own file tools (as an ordinary user) with it. So the root is reset to its
owner and mode 0700 at start, before every sandbox start, and on a freshly loaded workspace.
Private: no other local user may enter it (a setuid file in it would otherwise be reachable).

`prepare_sandbox_root` is the one place that decides this; every sandbox root (one per user
where there are several) goes through it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ghost.sandbox import fs

SANDBOX_ROOT_MODE = 0o700
# O_PATH: the root may be mode 0 (sandboxed code did it), which an O_RDONLY open would refuse to
# Ghost as an ordinary user; its owner and mode are then changed through /proc/self/fd.
ROOT_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def prepare_sandbox_root(path: Path, owner: tuple[int, int] | None = None) -> None:
    """Create the folder if missing, then make it `owner`'s (default: the sandbox identity, see
    `fs.set_owner`; nobody else's when Ghost is not root) with mode 0700, whatever the umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, SANDBOX_ROOT_MODE)
    except FileExistsError:
        pass
    fd = os.open(path, ROOT_FLAGS)
    try:
        fix_root_fd(fd, owner if owner is not None else fs.owner())
    finally:
        os.close(fd)


def fix_root_fd(fd: int, owner: tuple[int, int] | None) -> None:
    """Owner (None: leave it) and mode of the sandbox root open as `fd` (an O_PATH fd is fine),
    changed only where they differ: a stat, and nothing else on the usual path."""
    info = os.fstat(fd)
    if owner is not None and (info.st_uid, info.st_gid) != owner:
        os.chown(f"/proc/self/fd/{fd}", *owner)  # the very folder open as fd, never a name
    if stat.S_IMODE(info.st_mode) != SANDBOX_ROOT_MODE:
        os.chmod(f"/proc/self/fd/{fd}", SANDBOX_ROOT_MODE)


def give_tree(top: Path) -> None:
    """Give a tree Ghost built in its private temp space (a staged workspace) to the sandbox
    identity, without following links. Iterative: the tree may be thousands of levels deep."""
    owner = fs.owner()
    if owner is None:
        return
    os.lchown(top, *owner)
    pending = [top] if stat.S_ISDIR(os.lstat(top).st_mode) else []
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                os.lchown(entry.path, *owner)
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
