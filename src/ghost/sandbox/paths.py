"""The shape of a user- or model-supplied sandbox path, checked before any file is touched.

`split_relative` refuses NUL bytes, absolute paths, drive letters, backslashes that start no
escape (a separator on Windows, so a workspace zipped here could escape when unpacked there), `..`
components and names longer than the filesystem allows, and returns the components, each with
its escapes undone (`ghost.sandbox.names`: `bad\\xff.txt` names the file `b'bad\\xff.txt'`).
Where the path then leads is not decided here but by the fd-based file layer
(`ghost.sandbox.fs`), which resolves the components relative to the sandbox root's fd and never
follows a symlink: a check on path names followed by an open by name would lose to sandboxed code
swapping a folder for a link in between.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ghost.errors import UnsafePath
from ghost.sandbox.names import real_name, shown_name, shown_path

MAX_PATH_BYTES = 4096  # PATH_MAX on Linux
MAX_NAME_BYTES = 255  # NAME_MAX on Linux
MAX_ESCAPED_CHARS = 4 * MAX_PATH_BYTES  # the escaped form takes at most four characters a byte
_DRIVE = re.compile(r"^[A-Za-z]:")


def split_relative(user_path: str) -> list[str]:
    """Validate the path's shape and return its components ('' and '.' dropped), each the real
    file name its escaped form stands for (`ghost.sandbox.names`)."""
    if not isinstance(user_path, str):
        raise UnsafePath("path must be a string")
    if "\x00" in user_path:
        raise UnsafePath("path contains a NUL byte")
    if len(user_path) > MAX_ESCAPED_CHARS:  # before any work on it; the exact count follows
        raise UnsafePath(f"path longer than {MAX_PATH_BYTES} bytes")
    if user_path.startswith("/") or _DRIVE.match(user_path):
        raise UnsafePath("path must be relative to the sandbox, not absolute")
    # A backslash only as the start of an escape (a separator on Windows, so a workspace zipped
    # here could escape when unpacked there): real_name refuses any other.
    parts = [real_name(part) for part in user_path.split("/") if part not in ("", ".")]
    parts = [part for part in parts if part != "."]
    if ".." in parts:
        raise UnsafePath("path must not contain '..'")
    try:
        # The bytes the OS will see; a lone surrogate (JSON "\ud800") has none and would fail later.
        encoded = [os.fsencode(part) for part in parts]
    except UnicodeEncodeError as exc:
        raise UnsafePath("path contains characters that cannot be encoded as a file name") from exc
    if sum(len(part) + 1 for part in encoded) > MAX_PATH_BYTES:
        raise UnsafePath(f"path longer than {MAX_PATH_BYTES} bytes")
    for part in parts:
        if len(os.fsencode(part)) > MAX_NAME_BYTES:
            raise UnsafePath(f"a path component is longer than {MAX_NAME_BYTES} bytes")
    return parts


def shown_user_path(user_path: str) -> str:
    """A path someone gave, as Ghost shows it back (cleaned and escaped), even a malformed one."""
    try:
        return shown_path(split_relative(user_path))
    except UnsafePath:
        return shown_name(user_path if isinstance(user_path, str) else repr(user_path))


def is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
