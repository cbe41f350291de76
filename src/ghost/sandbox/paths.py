"""The shape of a user- or model-supplied sandbox path, checked before any file is touched.

`split_relative` refuses NUL bytes, absolute paths, drive letters, backslashes (a separator on
Windows, so a workspace zipped here could escape when unpacked there), `..` components and names
longer than the filesystem allows, and returns the components. Where the path then leads is not
decided here but by the fd-based file layer (`ghost.sandbox.fs`), which resolves the components
relative to the sandbox root's fd and never follows a symlink: a check on path names followed by
an open by name would lose to sandboxed code swapping a folder for a link in between.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ghost.errors import UnsafePath

MAX_PATH_BYTES = 4096  # PATH_MAX on Linux
MAX_NAME_BYTES = 255  # NAME_MAX on Linux
_DRIVE = re.compile(r"^[A-Za-z]:")


def split_relative(user_path: str) -> list[str]:
    """Validate the path's shape and return its components ('' and '.' dropped)."""
    if not isinstance(user_path, str):
        raise UnsafePath("path must be a string")
    if "\x00" in user_path:
        raise UnsafePath("path contains a NUL byte")
    try:
        # The bytes the OS will see; a lone surrogate (JSON "\ud800") has none and would fail later.
        encoded = os.fsencode(user_path)
    except UnicodeEncodeError as exc:
        raise UnsafePath("path contains characters that cannot be encoded as a file name") from exc
    if len(encoded) > MAX_PATH_BYTES:
        raise UnsafePath(f"path longer than {MAX_PATH_BYTES} bytes")
    if "\\" in user_path:
        raise UnsafePath("path contains a backslash; use '/' as the separator")
    if user_path.startswith("/") or _DRIVE.match(user_path):
        raise UnsafePath("path must be relative to the sandbox, not absolute")
    parts = [part for part in user_path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafePath("path must not contain '..'")
    for part in parts:
        if len(os.fsencode(part)) > MAX_NAME_BYTES:
            raise UnsafePath(f"a path component is longer than {MAX_NAME_BYTES} bytes")
    return parts


def is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
