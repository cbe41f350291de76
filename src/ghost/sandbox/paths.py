"""The one function that turns a user- or model-supplied path into a path inside the sandbox.

Every route and tool that touches sandbox files goes through `resolve_in_sandbox`. It refuses,
before any file is touched: NUL bytes, absolute paths, drive letters, backslashes (a separator
on Windows, so a workspace zipped here could escape when unpacked there), `..` components, names
longer than the filesystem allows, and paths that — following symlinks at any depth — end up
outside the sandbox root.

Known limit: the symlink check and the later open are two steps. Code running in the sandbox
could swap a checked directory for a symlink in between; the bubblewrap backend limits what such a
race can reach, since the sandboxed process itself sees nothing outside the sandbox.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ghost.errors import PathOutsideSandbox, UnsafePath

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


def resolve_in_sandbox(root: Path, user_path: str, *, allow_root: bool = False,
                       follow_final: bool = True) -> Path:
    """The path inside `root` that `user_path` names, or UnsafePath / PathOutsideSandbox.

    Returns the lexical path (root joined with the cleaned components), after checking that
    every symlink on the way, and the real location at the end, stay inside the real root.
    Operating on the lexical path keeps a symlink's own name usable (to delete or move the link).

    `follow_final=False` is for operations on a symlink itself (unlink, rename), which never
    touch what it points to: then only the way to the last component is checked, so a link
    that sandboxed code pointed outside can still be removed.
    """
    parts = split_relative(user_path)
    if not parts and not allow_root:
        raise UnsafePath("path names the sandbox itself; give a file or folder inside it")
    real_root = Path(os.path.realpath(root))
    candidate = real_root.joinpath(*parts)
    checked = candidate if follow_final or not candidate.is_symlink() else candidate.parent
    try:
        inside = (_links_stay_inside(real_root, parts if checked == candidate else parts[:-1])
                  and is_within(_real(checked), real_root))
    except OSError as exc:  # e.g. a name too long once joined to the root, or no permission
        raise UnsafePath(f"'{user_path}' cannot be used: {exc.strerror}") from exc
    if not inside:
        raise PathOutsideSandbox(f"'{user_path}' leads outside the sandbox")
    return candidate


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _links_stay_inside(real_root: Path, parts: list[str]) -> bool:
    """Whether each symlink met walking down `parts` resolves inside the root.

    The final location alone is not enough: `up/sandbox/x` with `up -> ..` ends inside, but
    walks through a directory outside to get there.
    """
    current = real_root
    for part in parts:
        step = current / part
        if not step.is_symlink():
            if not step.exists():
                return True  # nothing below a missing name can be a link yet
            current = step
            continue
        current = _real(step)
        if not is_within(current, real_root):
            return False
    return True


def relative_name(root: Path, path: Path) -> str:
    """How a path inside the sandbox is shown to users and the model."""
    return path.relative_to(Path(os.path.realpath(root))).as_posix()
