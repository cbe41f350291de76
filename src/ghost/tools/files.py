"""File tools: list, read, write, append, delete, move and search files in the sandbox.

Every path goes through `resolve_in_sandbox`; the file work itself runs in a thread, off the
event loop. Walks (recursive listing, search) never follow symlinks, and search never opens one.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ghost.errors import ToolError
from ghost.sandbox.paths import relative_name, resolve_in_sandbox
from ghost.tools.base import ToolResult

BINARY_SNIFF_BYTES = 8192
MAX_LINE_CHARS = 10_000  # a longer line is shown in pieces, never read whole into memory
DEFAULT_READ_LINES = 500


@dataclass(frozen=True)
class FileLimits:
    file_size_bytes: int  # largest file write/append may produce
    max_entries: int  # entries a listing, matches a search returns
    search_max_file_bytes: int  # larger files are skipped by search
    read_max_chars: int  # text one read returns before asking to continue


class FileTools:
    def __init__(self, root: Path, limits: FileLimits) -> None:
        self.root = root
        self.limits = limits

    def functions(self) -> list[Any]:
        return [self.list_files, self.read_file, self.write_file, self.append_file, self.delete_file,
                self.move_file, self.search_files]

    def _path(self, user_path: str, *, allow_root: bool = False, follow_final: bool = True) -> Path:
        return resolve_in_sandbox(self.root, user_path, allow_root=allow_root, follow_final=follow_final)

    def _name(self, path: Path) -> str:
        return relative_name(self.root, path) or "."

    # --- list -----------------------------------------------------------------------------------
    async def list_files(self, path: str = ".", recursive: bool = False) -> ToolResult:
        """List files and folders in the sandbox, with sizes.

        Args:
            path: Folder to list, relative to the sandbox ("." is the sandbox itself).
            recursive: Also list everything inside subfolders.
        """
        folder = self._path(path, allow_root=True)
        if not folder.is_dir():
            raise ToolError(f"{path!r} is not a folder")
        lines, more = await asyncio.to_thread(self._list, folder, recursive)
        if not lines:
            return ToolResult(f"{self._name(folder)} is empty", summary=f"listed {path}: empty")
        if more:
            lines.append(f"[... stopped after {self.limits.max_entries} entries ...]")
        return ToolResult("\n".join(lines), summary=f"listed {path}: {len(lines)} entries")

    def _list(self, folder: Path, recursive: bool) -> tuple[list[str], bool]:
        lines: list[str] = []
        for entry in _walk(folder, recursive):
            if len(lines) >= self.limits.max_entries:
                return lines, True
            lines.append(_describe(entry, folder))
        return lines, False

    # --- read -----------------------------------------------------------------------------------
    async def read_file(self, path: str, offset: int = 0, limit: int = DEFAULT_READ_LINES) -> ToolResult:
        """Read a text file from the sandbox, a slice of lines at a time for large files.

        Args:
            path: File to read, relative to the sandbox.
            offset: Number of lines to skip from the start.
            limit: Most lines to return.
        """
        if offset < 0 or limit < 1:
            raise ToolError("offset must be 0 or more and limit 1 or more")
        file = self._path(path)
        if not file.is_file():
            raise ToolError(f"{path!r} is not a file" if file.exists() else f"{path!r} does not exist")
        text = await asyncio.to_thread(self._read, file, offset, limit)
        return ToolResult(text, summary=f"read {self._name(file)}")

    def _read(self, file: Path, offset: int, limit: int) -> str:
        size = file.stat().st_size
        with open(file, "rb") as handle:
            if _looks_binary(handle.read(BINARY_SNIFF_BYTES)):
                return (f"{self._name(file)} is a binary file ({size:,} bytes) and is not shown; "
                        "inspect it with the execute tool.")
            handle.seek(0)
            return self._slice(_TextLines(handle), file, offset, limit, size)

    def _slice(self, lines: "_TextLines", file: Path, offset: int, limit: int, size: int) -> str:
        shown: list[str] = []
        chars = 0
        for number, line in enumerate(lines):
            if number < offset:
                continue
            if len(shown) >= limit or chars + len(line) > self.limits.read_max_chars:
                return "".join(shown) + (f"\n[... {self._name(file)} continues after line {number}; "
                                         f"read with offset={number} for more ...]")
            shown.append(line)
            chars += len(line)
        if not shown and offset:
            return f"{self._name(file)} has fewer than {offset + 1} lines"
        return "".join(shown) if shown or size else f"{self._name(file)} is empty"

    # --- write / append -------------------------------------------------------------------------
    async def write_file(self, path: str, content: str) -> ToolResult:
        """Create or replace a text file in the sandbox; missing folders are created.

        Args:
            path: File to write, relative to the sandbox.
            content: The whole new content of the file.
        """
        file = self._writable(path)
        data = self._sized(content.encode("utf-8"), 0)
        await asyncio.to_thread(_atomic_write, file, data)
        return ToolResult(f"wrote {self._name(file)} ({len(data):,} bytes)",
                          summary=f"wrote {self._name(file)} ({len(data):,} bytes)")

    async def append_file(self, path: str, content: str) -> ToolResult:
        """Add text to the end of a file in the sandbox, creating it if needed.

        Args:
            path: File to append to, relative to the sandbox.
            content: Text to add at the end.
        """
        file = self._writable(path)
        existing = file.stat().st_size if file.exists() else 0
        data = self._sized(content.encode("utf-8"), existing)
        await asyncio.to_thread(_append, file, data)
        return ToolResult(f"appended {len(data):,} bytes to {self._name(file)}",
                          summary=f"appended to {self._name(file)}")

    def _writable(self, user_path: str) -> Path:
        file = self._path(user_path)
        if file.is_symlink():  # write to what the link names (checked to be inside), keep the link
            file = Path(os.path.realpath(file))
        if file.is_dir():
            raise ToolError(f"{user_path!r} is a folder")
        return file

    def _sized(self, data: bytes, existing: int) -> bytes:
        if existing + len(data) > self.limits.file_size_bytes:
            raise ToolError(f"the file would be {existing + len(data):,} bytes; at most "
                            f"{self.limits.file_size_bytes:,} are allowed")
        return data

    # --- delete / move --------------------------------------------------------------------------
    async def delete_file(self, path: str, recursive: bool = False) -> ToolResult:
        """Delete a file, a symlink, or a folder (a folder with content needs recursive=true).

        Args:
            path: What to delete, relative to the sandbox.
            recursive: Allow deleting a folder and everything in it.
        """
        target = self._path(path, follow_final=False)  # a link itself is removed, never its target
        if not target.is_symlink() and not target.exists():
            raise ToolError(f"{path!r} does not exist")
        await asyncio.to_thread(_delete, target, recursive)
        return ToolResult(f"deleted {self._name(target)}", summary=f"deleted {self._name(target)}")

    async def move_file(self, source: str, destination: str, overwrite: bool = False) -> ToolResult:
        """Move or rename a file or folder inside the sandbox. Into an existing folder if the
        destination is one.

        Args:
            source: What to move, relative to the sandbox.
            destination: New path, or an existing folder to move it into.
            overwrite: Replace an existing file at the destination.
        """
        src, dst = self._path(source, follow_final=False), self._path(destination)
        if not src.is_symlink() and not src.exists():
            raise ToolError(f"{source!r} does not exist")
        if dst.is_dir() and not dst.is_symlink():
            dst = self._path(f"{destination}/{src.name}")
        if dst.exists() and not overwrite:
            raise ToolError(f"{self._name(dst)} exists; pass overwrite=true to replace it")
        if dst == src or src in dst.parents:
            raise ToolError("cannot move a folder into itself")
        await asyncio.to_thread(_move, src, dst)
        return ToolResult(f"moved {self._name(src)} to {self._name(dst)}",
                          summary=f"moved {self._name(src)} to {self._name(dst)}")

    # --- search ---------------------------------------------------------------------------------
    async def search_files(self, query: str, path: str = ".", case_sensitive: bool = False) -> ToolResult:
        """Find lines containing a text in the sandbox's text files (plain text, not a regex;
        use execute with grep for patterns).

        Args:
            query: Text to look for.
            path: Folder (or file) to search, relative to the sandbox.
            case_sensitive: Match upper and lower case exactly.
        """
        if not query:
            raise ToolError("query must not be empty")
        where = self._path(path, allow_root=True)
        matches, more = await asyncio.to_thread(self._search, where, query, case_sensitive)
        if not matches:
            return ToolResult(f"no matches for {query!r}", summary=f"search {query!r}: none")
        if more:
            matches.append(f"[... stopped after {self.limits.max_entries} matches ...]")
        return ToolResult("\n".join(matches), summary=f"search {query!r}: {len(matches)} matches")

    def _search(self, where: Path, query: str, case_sensitive: bool) -> tuple[list[str], bool]:
        needle = query if case_sensitive else query.casefold()
        matches: list[str] = []
        files = [where] if where.is_file() and not where.is_symlink() else (
            entry for entry in _walk(where, True) if entry.is_file(follow_symlinks=False))
        for file in files:
            for number, line in self._matching_lines(Path(file), needle, case_sensitive):
                if len(matches) >= self.limits.max_entries:
                    return matches, True
                matches.append(f"{self._name(Path(file))}:{number}: {line.strip()[:200]}")
        return matches, False

    def _matching_lines(self, file: Path, needle: str, case_sensitive: bool) -> list[tuple[int, str]]:
        try:
            if file.stat().st_size > self.limits.search_max_file_bytes:
                return []
            with open(file, "rb") as handle:
                if _looks_binary(handle.read(BINARY_SNIFF_BYTES)):
                    return []
                handle.seek(0)
                return [(number + 1, line) for number, line in enumerate(_TextLines(handle))
                        if needle in (line if case_sensitive else line.casefold())]
        except OSError:
            return []  # vanished or unreadable meanwhile: not a match


# --- helpers ------------------------------------------------------------------------------------

class _TextLines:
    """Lines of a binary file handle as text, none longer than MAX_LINE_CHARS."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def __iter__(self):  # noqa: ANN204 - a plain generator
        while line := self.handle.readline(MAX_LINE_CHARS):
            yield line.decode("utf-8", "replace")


def _looks_binary(sample: bytes) -> bool:
    if b"\0" in sample:
        return True
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start < len(sample) - 4  # a character cut at the sample's end is fine
    return False


def _walk(folder: Path, recursive: bool):  # noqa: ANN202 - yields os.DirEntry
    """Entries below `folder`, sorted, never following symlinks."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        yield entry
        if recursive and entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path), True)


def _describe(entry: os.DirEntry, base: Path) -> str:
    name = Path(entry.path).relative_to(base).as_posix()
    if entry.is_symlink():
        return f"{name} -> {os.readlink(entry.path)} (link)"
    if entry.is_dir(follow_symlinks=False):
        return f"{name}/"
    try:
        return f"{name} ({entry.stat(follow_symlinks=False).st_size:,} bytes)"
    except OSError:
        return name


def _atomic_write(file: Path, data: bytes) -> None:
    """Write to a temporary file beside it, then rename: a failure never leaves half a file."""
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=file.parent, prefix=".ghost-write-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, file)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _append(file: Path, data: bytes) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    with open(file, "ab") as handle:
        handle.write(data)


def _delete(target: Path, recursive: bool) -> None:
    if target.is_symlink() or not target.is_dir():
        target.unlink()
    elif recursive:
        shutil.rmtree(target)
    else:
        try:
            target.rmdir()
        except OSError as exc:
            raise ToolError(f"{target.name} is a folder with content; pass recursive=true") from exc


def _move(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)
