"""Names that define a workspace on disk and inside an archive, and Ghost's scratch space."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ghost.errors import GhostError, InsufficientStorage
from ghost.sandbox import fswalk
from ghost.private import private_dir

log = logging.getLogger("ghost.workspace")

# Acquired skills live in this folder of the sandbox; in an archive they sit beside `sandbox/`.
SKILLS_DIR = "acquired_skills"
# The archive's other top-level names.
SESSION_FILE = "session.json"
SANDBOX_DIR = "sandbox"
ARCHIVE_FORMAT = "ghost-workspace"
ARCHIVE_VERSION = 1

CHUNK = 64 * 1024  # response chunks
IO_BLOCK = 1024 * 1024  # file reads and writes done in a worker thread


def tmp_dir(sandbox_root: Path) -> Path:
    """Ghost's scratch space for uploads, archives and load staging.

    It sits next to the sandbox, on the same filesystem, so that a finished upload or a staged
    load moves into the sandbox with a rename, and outside it, so that code running in the sandbox
    cannot see or tamper with half-written files.
    """
    return sandbox_root.parent / f".{sandbox_root.name}.ghost-tmp{_replica_suffix}"


# Replicas sharing one workspace root each keep scratch space of their own next to each sandbox: a
# replica's start empties its own (left-overs of its killed self), never another's uploads in flight.
_replica_suffix = ""


def use_replica_scratch(replica: str) -> None:
    """Called once at start by a replica (ghost.app); `replica`: a stable name of it, "" on one machine."""
    global _replica_suffix
    _replica_suffix = f"-{replica}" if replica else ""


def require_tmp_dir(sandbox_root: Path) -> Path:
    """The scratch space, created if needed; a clear error if the sandbox's parent is not writable."""
    path = tmp_dir(sandbox_root)
    try:
        private_dir(path)
    except OSError as exc:
        raise GhostError(
            f"cannot create Ghost's temp folder {path.name!r} next to the sandbox: {exc.strerror}; "
            "the sandbox's parent folder must be writable by Ghost"
        ) from exc
    return path


def reset_tmp_dir(sandbox_root: Path) -> None:
    """At start: empty the scratch space (left-overs of a killed process) and check the layout."""
    path = tmp_dir(sandbox_root)
    try:
        fswalk.remove_path(path)  # iterative: a killed load may have left a sandbox thousands of levels deep
        private_dir(path)
    except OSError as exc:
        log.warning("workspace uploads and loads will fail: cannot prepare %s: %s", path, exc.strerror)
        return
    if os.stat(sandbox_root).st_dev != os.stat(path).st_dev:
        log.warning("the sandbox %s is a mount point of its own: a workspace load cannot swap it in "
                    "atomically and will fail; mount its parent folder instead", sandbox_root)


@contextmanager
def disk_space(what: str) -> Iterator[None]:
    """A full disk (or quota) while writing `what` becomes a 507 InsufficientStorage, not a 500."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise InsufficientStorage(f"not enough disk space for the {what}; nothing was kept") from exc
