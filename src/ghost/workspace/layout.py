"""Names that define a workspace on disk and inside an archive."""

from __future__ import annotations

import shutil
from pathlib import Path

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
    return sandbox_root.parent / f".{sandbox_root.name}.ghost-tmp"


def reset_tmp_dir(sandbox_root: Path) -> Path:
    """Empty the scratch space (left-overs of a killed process) and make sure it exists."""
    path = tmp_dir(sandbox_root)
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
    path.mkdir(mode=0o700)
    return path
