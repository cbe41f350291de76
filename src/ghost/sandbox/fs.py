"""The one way Ghost touches a file under the sandbox: relative to directory file descriptors.

Everything below the sandbox root is written by sandboxed code and may change at any moment: a
folder may become a symlink to `/etc` between two system calls. So no path is checked and then
opened by name. Instead:

- the root is opened once per operation (`open_root`), and every user path is resolved relative
  to that fd, by the kernel (`openat2` with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
  RESOLVE_NO_MAGICLINKS) or, where openat2 is missing or refused, one component at a time with
  `O_NOFOLLOW | O_DIRECTORY`;
- the last step is always an `*at` call on the parent folder's fd with one plain name
  (`O_NOFOLLOW` opens, `unlinkat`, `renameat`, `mkdirat`), so nothing can redirect it;
- files are opened `O_NONBLOCK` and checked with `fstat` to be regular files before any byte is
  read or written (a FIFO can neither block the open nor the read);
- temp files get a random name and are created `O_CREAT | O_EXCL | O_NOFOLLOW` in the target's
  own folder fd.

Ghost never follows a symlink that sandboxed code made: links keep working for the sandboxed
code itself, but to Ghost a path through a link is refused (`ThroughLink`, a 404 on the HTTP
routes, a failed tool call for the model). A link itself can still be listed, deleted and moved.

Walks live in `fswalk.py` (iterative, fd-relative, depth-limited), and the thread pool all this
blocking work runs on in `fspool.py`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ghost.errors import PathOutsideSandbox, Unprocessable, UnsafePath
from ghost.sandbox.paths import shown_user_path, split_relative

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
DEFAULT_MAX_DEPTH = 200
_BLOCK = 1024 * 1024


class ThroughLink(PathOutsideSandbox):
    """A path that goes through (or ends at) a symlink: Ghost does not follow sandbox links."""


class NotRegular(PathOutsideSandbox):
    """A FIFO, socket, device or other special file where Ghost needs a regular file."""


class TooDeep(Unprocessable):
    """Folders nested deeper than the walk's depth limit."""


def too_deep(max_depth: int) -> TooDeep:
    return TooDeep(f"folders are nested more than {max_depth} levels deep; Ghost stops there "
                   "(GHOST_SANDBOX_WALK_MAX_DEPTH)")


def through_link(user_path: str) -> ThroughLink:
    return ThroughLink(f"'{shown_user_path(user_path)}' goes through a symbolic link, which Ghost does not follow "
                       "(a link could lead outside the sandbox)")


# --- openat2 ---------------------------------------------------------------------------------------
_SYS_OPENAT2 = 437  # the same number on x86_64 and aarch64 (new syscalls share one table)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_RESOLVE = _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _load_syscall():  # type: ignore[no-untyped-def]
    try:
        fn = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_long
    return fn


_syscall = _load_syscall()
_openat2_usable = _syscall is not None and os.uname().machine in ("x86_64", "aarch64")


def _openat2(dir_fd: int, path: str, flags: int) -> int | None:
    """The fd openat2 gives, None where openat2 cannot be used here (the caller walks instead)."""
    global _openat2_usable
    if not _openat2_usable:
        return None
    how = _OpenHow(flags=flags, mode=0, resolve=_RESOLVE)
    for _ in range(8):  # EAGAIN: a rename raced the lookup; the kernel asks to try again
        fd = _syscall(_SYS_OPENAT2, dir_fd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how))
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EPERM, errno.E2BIG):  # old kernel, seccomp filter, new struct
            if err != errno.E2BIG:
                _openat2_usable = False
            return None
        if err != errno.EAGAIN:
            raise OSError(err, os.strerror(err), path)
    return None


# --- resolving -------------------------------------------------------------------------------------
@contextmanager
def open_root(root: Path) -> Iterator[int]:
    """The sandbox root as a directory fd, for one operation. The root's own path is Ghost's
    configuration (its parent is not writable from the sandbox), so opening it by name is safe."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def closing(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def open_dir(base_fd: int, parts: list[str] | tuple[str, ...], *, user_path: str = "",
             create: bool = False) -> int:
    """A new fd for the folder `parts` below `base_fd`, never leaving it, never through a link.

    FileNotFoundError / NotADirectoryError as the kernel says; ThroughLink for a symlink on the
    way. `create` makes missing folders (like `mkdir -p`).
    """
    if not parts:
        return os.open(".", DIR_FLAGS, dir_fd=base_fd)
    try:
        # Without O_NOFOLLOW a link at the end fails as ELOOP (RESOLVE_NO_SYMLINKS), not ENOTDIR.
        fd = _openat2(base_fd, "/".join(parts), DIR_FLAGS & ~os.O_NOFOLLOW)
    except FileNotFoundError:
        if not create:
            raise
        fd = None
    except OSError as exc:
        raise _translated(exc, user_path) from exc
    if fd is not None:
        return fd
    return _walk_open(base_fd, parts, user_path, create)


def _walk_open(base_fd: int, parts: list[str] | tuple[str, ...], user_path: str, create: bool) -> int:
    fd = os.open(".", DIR_FLAGS, dir_fd=base_fd)
    try:
        for part in parts:
            nxt = _step(fd, part, user_path, create)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _step(fd: int, name: str, user_path: str, create: bool) -> int:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:
        raise _translated(exc, user_path, fd, name) from exc
    try:
        os.mkdir(name, 0o755, dir_fd=fd)
    except FileExistsError:
        pass  # made meanwhile; the open below checks what it is
    try:
        child = os.open(name, DIR_FLAGS, dir_fd=fd)
    except OSError as exc:
        raise _translated(exc, user_path, fd, name) from exc
    give(child)
    return child


# --- ownership ---------------------------------------------------------------------------------------
# When Ghost runs as root, sandboxed code runs as the sandbox identity (ghost.sandbox.identity), so
# what Ghost creates in the sandbox (folders, written and uploaded files, loaded workspaces) is
# given to that identity: owned by root, sandboxed code could read it but never change it.
_owner: tuple[int, int] | None = None


def set_owner(owner: tuple[int, int] | None) -> None:
    """The (uid, gid) files Ghost creates in the sandbox belong to; None: Ghost's own user."""
    global _owner
    _owner = owner


def owner() -> tuple[int, int] | None:
    return _owner


def give(fd: int) -> None:
    """Make the open file or folder the sandbox identity's (no-op when Ghost is not root)."""
    if _owner is not None:
        info = os.fstat(fd)
        if (info.st_uid, info.st_gid) != _owner:
            os.fchown(fd, *_owner)


def _translated(exc: OSError, user_path: str, fd: int | None = None, name: str = "") -> OSError | UnsafePath:
    if exc.errno in (errno.ELOOP, errno.EXDEV):
        return through_link(user_path)
    if exc.errno == errno.ENOTDIR and fd is not None and is_link(fd, name):
        return through_link(user_path)
    if exc.errno == errno.ENAMETOOLONG:
        return UnsafePath(f"'{shown_user_path(user_path)}' cannot be used: {exc.strerror}")
    return exc


def is_link(dir_fd: int, name: str) -> bool:
    info = lstat_at(dir_fd, name)
    return info is not None and stat.S_ISLNK(info.st_mode)


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """What `name` in the folder is (a link is reported as a link), None if nothing is there."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None


@contextmanager
def parent_of(root: Path, user_path: str, *, create: bool = False) -> Iterator[tuple[int, str]]:
    """(fd of the folder holding `user_path`'s last component, that component), for `*at` calls."""
    parts = split_relative(user_path)
    if not parts:
        raise UnsafePath("path names the sandbox itself; give a file or folder inside it")
    with open_root(root) as root_fd, closing(open_dir(root_fd, parts[:-1], user_path=user_path,
                                                      create=create)) as fd:
        yield fd, parts[-1]


@contextmanager
def folder(root: Path, user_path: str, *, create: bool = False) -> Iterator[int]:
    """An fd for the folder `user_path` ("." or "" is the root itself)."""
    parts = split_relative(user_path)
    with open_root(root) as root_fd, closing(open_dir(root_fd, parts, user_path=user_path,
                                                      create=create)) as fd:
        yield fd


# --- regular files ---------------------------------------------------------------------------------
def open_regular(dir_fd: int, name: str, flags: int = READ_FLAGS, *, user_path: str = "") -> int:
    """Open `name` in the folder as a regular file (never a link, FIFO or device; never blocks)."""
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO opened for writing with no reader
            raise NotRegular(f"'{shown_user_path(user_path or name)}' is not a regular file") from exc
        raise _translated(exc, user_path or name, dir_fd, name) from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotRegular(f"'{shown_user_path(user_path or name)}' is not a regular file")
    if flags & os.O_CREAT:
        give(fd)
    return fd


def read_capped(fd: int, cap: int) -> bytes:
    """The file's bytes; ValueError if it holds (or grows to) more than `cap`."""
    if os.fstat(fd).st_size > cap:
        raise ValueError(f"larger than {cap:,} bytes")
    chunks, total = [], 0
    while block := os.read(fd, min(_BLOCK, cap + 1 - total)):
        chunks.append(block)
        total += len(block)
        if total > cap:
            raise ValueError(f"larger than {cap:,} bytes")
    return b"".join(chunks)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def create_temp(dir_fd: int, prefix: str, suffix: str = "") -> tuple[int, str]:
    """A new empty file with a random name in the folder: (fd, name). Never reuses what is there."""
    for _ in range(16):
        name = f"{prefix}{secrets.token_hex(8)}{suffix}"
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o644, dir_fd=dir_fd)
        except FileExistsError:
            continue
        give(fd)
        return fd, name
    raise FileExistsError(errno.EEXIST, "no free temp name", prefix)


def replace_file(dir_fd: int, name: str, data: bytes, *, prefix: str = ".ghost-write-") -> None:
    """Write `data` to a temp file beside `name`, then rename it over `name` (never half a file).

    The rename replaces whatever entry `name` is, a symlink included, without following it.
    """
    fd, temp = create_temp(dir_fd, prefix)
    try:
        with closing(fd):
            write_all(fd, data)
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        unlink_quietly(dir_fd, temp)
        raise


def unlink_quietly(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


# --- renaming --------------------------------------------------------------------------------------
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def _load_renameat2():  # type: ignore[no-untyped-def]
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()


def renameat2(src_fd: int, src: str | Path, dst_fd: int, dst: str | Path, flags: int) -> bool:
    """renameat2(2); True if done, False where the kernel or filesystem lacks it (caller falls back)."""
    if _renameat2 is None:
        return False
    if _renameat2(src_fd, os.fsencode(src), dst_fd, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(err, os.strerror(err), str(src), None, str(dst))


def rename_at(src_fd: int, src: str, dst_fd: int, dst: str, *, replace: bool) -> None:
    """Rename one entry between two folder fds; without `replace`, never over an existing entry."""
    if replace:
        os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
        return
    if renameat2(src_fd, src, dst_fd, dst, RENAME_NOREPLACE):
        return
    if lstat_at(dst_fd, dst) is not None:
        raise FileExistsError(errno.EEXIST, "destination exists", dst)
    os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
