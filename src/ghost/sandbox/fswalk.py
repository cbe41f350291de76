"""Walking and removing trees below the sandbox: iterative, fd-relative, never through a link.

Sandboxed code can build a tree thousands of levels deep, swap any folder for a link mid-walk, or
fill folders with FIFOs. So walks keep an explicit stack of folder fds (no recursion limit to
hit), open each folder `O_NOFOLLOW` relative to its parent's fd, skip what is neither a regular
file nor a folder, and stop with `TooDeep` past a depth limit. `remove_tree` goes any depth with
a bounded number of open fds.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ghost.sandbox import fs


# --- walking ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Node:
    """One entry met by `walk`. `dir_fd` is its folder's fd, valid only until the walk moves on."""

    parts: tuple[str, ...]  # path below the walk's start
    dir_fd: int
    info: os.stat_result  # lstat: a link is a link

    @property
    def name(self) -> str:
        return self.parts[-1]

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.info.st_mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.info.st_mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.info.st_mode)


def walk(start_fd: int, max_depth: int, *, recursive: bool = True, others: bool = False) -> Iterator[Node]:
    """Every folder and regular file below `start_fd`, sorted, depth first, folders before their
    content. Iterative; opens each folder with O_NOFOLLOW relative to its parent's fd. With
    `others`, links and special files are yielded too (never followed nor opened)."""
    stack: list[tuple[int, tuple[str, ...], Iterator[tuple[str, os.stat_result]]]] = []
    stack.append((os.open(".", fs.DIR_FLAGS, dir_fd=start_fd), (), _entries(start_fd)))
    try:
        while stack:
            fd, base, entries = stack[-1]
            for name, info in entries:
                node = Node((*base, name), fd, info)
                if not (others or node.is_dir or node.is_file):
                    continue
                yield node
                if recursive and node.is_dir:
                    child = _child_dir(fd, name, len(stack), max_depth)
                    if child is not None:
                        stack.append((child, node.parts, _entries(child)))
                        break
            else:
                os.close(stack.pop()[0])
    finally:
        for fd, _, _ in stack:
            os.close(fd)


def _entries(fd: int) -> Iterator[tuple[str, os.stat_result]]:
    try:
        names = sorted(entry.name for entry in os.scandir(fd))
    except OSError:
        return
    for name in names:
        info = fs.lstat_at(fd, name)
        if info is not None:
            yield name, info


def _child_dir(fd: int, name: str, depth: int, max_depth: int) -> int | None:
    if depth >= max_depth:
        raise fs.too_deep(max_depth)
    try:
        return os.open(name, fs.DIR_FLAGS, dir_fd=fd)
    except OSError:
        return None  # gone or swapped for a link meanwhile: skipped, never followed


def remove_tree(dir_fd: int, name: str, max_depth: int = fs.DEFAULT_MAX_DEPTH) -> None:
    """Delete the folder `name` and everything in it, iteratively, never following a link.

    Any depth: past `max_depth` open folders, the next sub-folder is first moved up to the top
    of the tree being removed (a rename between two of its own fds), so at most `max_depth` fds
    are open however deep the tree goes.
    """
    stack = [(dir_fd, name, os.open(name, fs.DIR_FLAGS, dir_fd=dir_fd))]
    try:
        while stack:
            parent, here, fd = stack[-1]
            child = _clear_files(fd)
            if child is None:
                stack.pop()
                os.close(fd)
                os.rmdir(here, dir_fd=parent)
            elif len(stack) >= max(2, max_depth):
                os.rename(child, f".ghost-rm-{secrets.token_hex(8)}", src_dir_fd=fd, dst_dir_fd=stack[0][2])
            else:
                _descend(stack, fd, child)
    finally:
        for _, _, fd in stack:
            os.close(fd)


def remove_path(path: Path) -> None:
    """Remove a file, link or tree at a path whose folder is Ghost's own (not the sandbox's)."""
    with fs.closing(os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)) as parent:
        info = fs.lstat_at(parent, path.name)
        if info is None:
            return
        if stat.S_ISDIR(info.st_mode):
            remove_tree(parent, path.name)
        else:
            os.unlink(path.name, dir_fd=parent)


def _descend(stack: list[tuple[int, str, int]], fd: int, child: str) -> None:
    try:
        stack.append((fd, child, os.open(child, fs.DIR_FLAGS, dir_fd=fd)))
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        fs.unlink_quietly(fd, child)  # swapped for a link or a file meanwhile: remove that


def _clear_files(fd: int) -> str | None:
    """Unlink every non-folder in the folder; the first sub-folder's name, or None when empty."""
    for entry in os.scandir(fd):
        if entry.is_dir(follow_symlinks=False):
            return entry.name
        fs.unlink_quietly(fd, entry.name)
    return None
