"""File tools: list, read, write, append, delete, move and search files in the sandbox.

Every path goes through the fd-based file layer (`ghost.sandbox.fs`): resolved relative to the
sandbox root's fd, never through a symlink, the last step an `*at` call on the parent folder's
fd. A symlink that sandboxed code made is shown by `list_files` and can be deleted or moved, but
reading, writing or walking through it is refused. Only regular files are read or written.
The file work runs on the file layer's own thread pool, off the event loop.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ghost.errors import ToolError, UnsafePath
from ghost.sandbox import fs, fspool, fswalk
from ghost.sandbox.names import shown_name, shown_path
from ghost.sandbox.paths import shown_user_path, split_relative
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
    max_depth: int = fs.DEFAULT_MAX_DEPTH  # deepest folder a walk goes into


def shown(user_path: str) -> str:
    """How a path is shown to the model: cleaned, relative to the sandbox, in the escaped form
    every name is shown in (`ghost.sandbox.names`)."""
    return shown_user_path(user_path)


@contextmanager
def _plain_errors(user_path: str) -> Iterator[None]:
    """The usual OS errors as tool errors naming the path the model gave."""
    try:
        yield
    except FileNotFoundError as exc:
        raise ToolError(f"{shown(user_path)!r} does not exist") from exc
    except NotADirectoryError as exc:
        raise ToolError(f"a part of {shown(user_path)!r} is a file, not a folder") from exc


class FileTools:
    def __init__(self, root: Path, limits: FileLimits) -> None:
        self.root = root
        self.limits = limits

    def functions(self) -> list[Any]:
        return [self.list_files, self.read_file, self.write_file, self.append_file, self.delete_file,
                self.move_file, self.search_files]

    # --- list -----------------------------------------------------------------------------------
    async def list_files(self, path: str = ".", recursive: bool = False) -> ToolResult:
        """List files and folders in the sandbox, with sizes.

        Args:
            path: Folder to list, relative to the sandbox ("." is the sandbox itself).
            recursive: Also list everything inside subfolders.
        """
        lines, more = await fspool.run(self._list, path, recursive)
        if not lines:
            return ToolResult(f"{shown(path)} is empty", summary=f"listed {path}: empty")
        if more:
            lines.append(f"[... stopped after {self.limits.max_entries} entries ...]")
        return ToolResult("\n".join(lines), summary=f"listed {path}: {len(lines)} entries")

    def _list(self, user_path: str, recursive: bool) -> tuple[list[str], bool]:
        lines: list[str] = []
        with _plain_errors(user_path), self._folder(user_path) as folder:
            for node in fswalk.walk(folder, self.limits.max_depth, recursive=recursive, others=True):
                if len(lines) >= self.limits.max_entries:
                    return lines, True
                lines.append(_describe(node))
        return lines, False

    @contextmanager
    def _folder(self, user_path: str) -> Iterator[int]:
        try:
            with fs.folder(self.root, user_path) as fd:
                yield fd
        except NotADirectoryError as exc:
            parts = split_relative(user_path)
            if parts and self._kind(parts) is not None:
                raise ToolError(f"{shown(user_path)!r} is not a folder") from exc
            raise

    def _kind(self, parts: list[str]) -> int | None:
        """The file type of the entry at `parts` (lstat), None if it is not there."""
        with fs.open_root(self.root) as root_fd, fs.closing(fs.open_dir(root_fd, parts[:-1])) as fd:
            info = fs.lstat_at(fd, parts[-1])
        return None if info is None else stat.S_IFMT(info.st_mode)

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
        text = await fspool.run(self._read, path, offset, limit)
        return ToolResult(text, summary=f"read {shown(path)}")

    def _read(self, user_path: str, offset: int, limit: int) -> str:
        with _plain_errors(user_path), fs.parent_of(self.root, user_path) as (folder, name):
            _existing(folder, name, user_path, want_file=True)
            fd = fs.open_regular(folder, name, user_path=user_path)
        with open(fd, "rb") as handle:
            size = os.fstat(fd).st_size
            if _looks_binary(handle.read(BINARY_SNIFF_BYTES)):
                return (f"{shown(user_path)} is a binary file ({size:,} bytes) and is not shown; "
                        "inspect it with the execute tool.")
            handle.seek(0)
            return self._slice(_TextLines(handle), shown(user_path), offset, limit, size)

    def _slice(self, lines: "_TextLines", name: str, offset: int, limit: int, size: int) -> str:
        shown_lines: list[str] = []
        chars = 0
        for number, line in enumerate(lines):
            if number < offset:
                continue
            if len(shown_lines) >= limit or chars + len(line) > self.limits.read_max_chars:
                return "".join(shown_lines) + (f"\n[... {name} continues after line {number}; "
                                               f"read with offset={number} for more ...]")
            shown_lines.append(line)
            chars += len(line)
        if not shown_lines and offset:
            return f"{name} has fewer than {offset + 1} lines"
        return "".join(shown_lines) if shown_lines or size else f"{name} is empty"

    # --- write / append -------------------------------------------------------------------------
    async def write_file(self, path: str, content: str) -> ToolResult:
        """Create or replace a text file in the sandbox; missing folders are created.

        Args:
            path: File to write, relative to the sandbox.
            content: The whole new content of the file.
        """
        data = self._sized(content.encode("utf-8"), 0)
        await fspool.run(self._write, path, data)
        return ToolResult(f"wrote {shown(path)} ({len(data):,} bytes)",
                          summary=f"wrote {shown(path)} ({len(data):,} bytes)")

    def _write(self, user_path: str, data: bytes) -> None:
        with self._write_target(user_path) as (folder, name):
            fs.replace_file(folder, name, data)

    async def append_file(self, path: str, content: str) -> ToolResult:
        """Add text to the end of a file in the sandbox, creating it if needed.

        Args:
            path: File to append to, relative to the sandbox.
            content: Text to add at the end.
        """
        data = content.encode("utf-8")
        await fspool.run(self._append, path, data)
        return ToolResult(f"appended {len(data):,} bytes to {shown(path)}",
                          summary=f"appended to {shown(path)}")

    def _append(self, user_path: str, data: bytes) -> None:
        with self._write_target(user_path) as (folder, name):
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
            with fs.closing(fs.open_regular(folder, name, flags, user_path=user_path)) as fd:
                self._sized(data, os.fstat(fd).st_size)
                fs.write_all(fd, data)

    @contextmanager
    def _write_target(self, user_path: str) -> Iterator[tuple[int, str]]:
        """(folder fd, name) a write lands on: missing folders made; never a folder or a link."""
        with _plain_errors(user_path), fs.parent_of(self.root, user_path, create=True) as (folder, name):
            _not_a_folder_or_link(folder, name, user_path)
            yield folder, name

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
        await fspool.run(self._delete, path, recursive)
        return ToolResult(f"deleted {shown(path)}", summary=f"deleted {shown(path)}")

    def _delete(self, user_path: str, recursive: bool) -> None:
        with _plain_errors(user_path), fs.parent_of(self.root, user_path) as (folder, name):
            info = _existing(folder, name, user_path)
            if not stat.S_ISDIR(info.st_mode):
                os.unlink(name, dir_fd=folder)  # a link itself, never its target
            elif recursive:
                fswalk.remove_tree(folder, name, self.limits.max_depth)
            else:
                try:
                    os.rmdir(name, dir_fd=folder)
                except OSError as exc:
                    if exc.errno != errno.ENOTEMPTY:
                        raise
                    raise ToolError(f"{shown_name(name)} is a folder with content; pass recursive=true") from exc

    async def move_file(self, source: str, destination: str, overwrite: bool = False) -> ToolResult:
        """Move or rename a file or folder inside the sandbox. Into an existing folder if the
        destination is one.

        Args:
            source: What to move, relative to the sandbox.
            destination: New path, or an existing folder to move it into.
            overwrite: Replace an existing file at the destination.
        """
        moved_to = await fspool.run(self._move, source, destination, overwrite)
        return ToolResult(f"moved {shown(source)} to {moved_to}",
                          summary=f"moved {shown(source)} to {moved_to}")

    def _move(self, source: str, destination: str, overwrite: bool) -> str:
        src, dst = split_relative(source), split_relative(destination)
        if not src or not dst:
            raise UnsafePath("path names the sandbox itself; give a file or folder inside it")
        with fs.open_root(self.root) as root_fd:
            with _plain_errors(source), fs.closing(fs.open_dir(root_fd, src[:-1], user_path=source)) as src_fd:
                _existing(src_fd, src[-1], source)
                if self._is_real_folder(root_fd, dst, destination):
                    dst = [*dst, src[-1]]
                if dst[:len(src)] == src:
                    raise ToolError("cannot move a folder into itself")
                with _plain_errors(destination), fs.closing(fs.open_dir(
                        root_fd, dst[:-1], user_path=destination, create=True)) as dst_fd:
                    self._rename(src_fd, src[-1], dst_fd, dst[-1], overwrite)
        return shown_path(dst)

    @staticmethod
    def _is_real_folder(root_fd: int, parts: list[str], user_path: str) -> bool:
        try:
            fd = fs.open_dir(root_fd, parts, user_path=user_path)
        except (FileNotFoundError, NotADirectoryError, fs.ThroughLink):
            return False
        os.close(fd)
        return True

    @staticmethod
    def _rename(src_fd: int, src: str, dst_fd: int, dst: str, overwrite: bool) -> None:
        try:
            fs.rename_at(src_fd, src, dst_fd, dst, replace=overwrite)
        except FileExistsError as exc:
            raise ToolError(f"{shown_name(dst)} exists; pass overwrite=true to replace it") from exc

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
        matches, more = await fspool.run(self._search, path, query, case_sensitive)
        if not matches:
            return ToolResult(f"no matches for {query!r}", summary=f"search {query!r}: none")
        if more:
            matches.append(f"[... stopped after {self.limits.max_entries} matches ...]")
        return ToolResult("\n".join(matches), summary=f"search {query!r}: {len(matches)} matches")

    def _search(self, user_path: str, query: str, case_sensitive: bool) -> tuple[list[str], bool]:
        needle = query if case_sensitive else query.casefold()
        matches: list[str] = []
        for name, dir_fd, file_name in self._searched_files(user_path):
            for number, line in self._matching_lines(dir_fd, file_name, needle, case_sensitive):
                if len(matches) >= self.limits.max_entries:
                    return matches, True
                matches.append(f"{name}:{number}: {line.strip()[:200]}")
        return matches, False

    def _searched_files(self, user_path: str) -> Iterator[tuple[str, int, str]]:
        """(shown name, folder fd, name in it) of each regular file to search."""
        parts = split_relative(user_path)
        with _plain_errors(user_path), fs.open_root(self.root) as root_fd:
            if parts:
                with fs.closing(fs.open_dir(root_fd, parts[:-1], user_path=user_path)) as parent:
                    info = _existing(parent, parts[-1], user_path)
                    if stat.S_ISREG(info.st_mode):
                        yield shown_path(parts), parent, parts[-1]
                        return
            with fs.closing(fs.open_dir(root_fd, parts, user_path=user_path)) as folder:
                for node in fswalk.walk(folder, self.limits.max_depth):
                    if node.is_file:
                        yield shown_path((*parts, *node.parts)), node.dir_fd, node.name

    def _matching_lines(self, dir_fd: int, name: str, needle: str, case_sensitive: bool) -> list[tuple[int, str]]:
        try:
            fd = fs.open_regular(dir_fd, name)
        except (OSError, UnsafePath):
            return []  # vanished, swapped for a link or a FIFO meanwhile: not a match
        with open(fd, "rb") as handle:
            if os.fstat(fd).st_size > self.limits.search_max_file_bytes:
                return []
            if _looks_binary(handle.read(BINARY_SNIFF_BYTES)):
                return []
            handle.seek(0)
            return [(number + 1, line) for number, line in enumerate(_TextLines(handle))
                    if needle in (line if case_sensitive else line.casefold())]


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


def _existing(folder: int, name: str, user_path: str, *, want_file: bool = False) -> os.stat_result:
    """What `name` is (lstat); a tool error if it is missing, or a folder where a file is wanted."""
    info = fs.lstat_at(folder, name)
    if info is None:
        raise ToolError(f"{shown(user_path)!r} does not exist")
    if want_file and stat.S_ISLNK(info.st_mode):
        raise fs.through_link(user_path)
    if want_file and stat.S_ISDIR(info.st_mode):
        raise ToolError(f"{shown(user_path)!r} is not a file")
    return info


def _not_a_folder_or_link(folder: int, name: str, user_path: str) -> None:
    info = fs.lstat_at(folder, name)
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise ToolError(f"{shown(user_path)!r} is a folder")
    if info is not None and stat.S_ISLNK(info.st_mode):
        raise fs.through_link(user_path)


def _describe(node: fswalk.Node) -> str:
    name = shown_path(node.parts)
    if node.is_link:
        try:
            return f"{name} -> {shown_name(os.readlink(node.name, dir_fd=node.dir_fd))} (link)"
        except OSError:
            return f"{name} (link)"
    if node.is_dir:
        return f"{name}/"
    if node.is_file:
        return f"{name} ({node.info.st_size:,} bytes)"
    return f"{name} (special file)"
