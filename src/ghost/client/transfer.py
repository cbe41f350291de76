"""Files to and from Ghost, streamed in chunks (never whole in memory), with a progress bar.

Uploads go as multipart (field `file`): httpx reads the file as it sends, and every read advances
the bar. Downloads are written to a temporary file beside the destination and renamed into place
once complete, so a broken transfer never leaves a half file under the destination's name.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx
from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                           TransferSpeedColumn)

from ghost.client.connection import ClientError, GhostConnection

CHUNK_BYTES = 64 * 1024
STDOUT = "-"
_FILENAME = re.compile(r'filename="?([^";]+)"?')


@contextmanager
def progress_bar(console: Console, label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n)`. Drawn only on a terminal; silent in pipes and logs."""
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False, disable=not console.is_terminal) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


class ProgressReader:
    """A binary file whose reads advance a progress bar; httpx sizes it with fileno()."""

    def __init__(self, file: BinaryIO, advance: Callable[[int], None]) -> None:
        self.file = file
        self.advance = advance

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        self.advance(len(data))
        return data

    def fileno(self) -> int:
        return self.file.fileno()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()


def local_file(path: Path) -> Path:
    if not path.is_file():
        raise ClientError(f"no such file: {path}")
    return path


def send_file(conn: GhostConnection, route: str, path: Path, console: Console,
              data: dict[str, str] | None = None) -> dict[str, Any]:
    path = local_file(path)
    with path.open("rb") as file, progress_bar(console, f"up {path.name}", path.stat().st_size) as advance:
        files = {"file": (path.name, ProgressReader(file, advance), "application/octet-stream")}
        return conn.request("POST", route, files=files, data=data)


def receive_file(response: httpx.Response, dest: Path | str, console: Console) -> Path | str:
    """Write a streamed body to `dest` (a file, a directory to put it in, or "-" for stdout)."""
    total = int(response.headers.get("content-length") or 0) or None
    if dest == STDOUT:
        with progress_bar(console, "down", total) as advance:
            for chunk in response.iter_bytes(CHUNK_BYTES):
                sys.stdout.buffer.write(chunk)
                advance(len(chunk))
        sys.stdout.buffer.flush()
        return STDOUT
    target = Path(dest)
    if target.is_dir():
        target = target / suggested_name(response)
    return _write_atomically(response, target, console, total)


def _write_atomically(response: httpx.Response, target: Path, console: Console, total: int | None) -> Path:
    partial = target.with_name(f".{target.name}.part-{os.getpid()}")
    try:
        with partial.open("wb") as out, progress_bar(console, f"down {target.name}", total) as advance:
            for chunk in response.iter_bytes(CHUNK_BYTES):
                out.write(chunk)
                advance(len(chunk))
        partial.replace(target)
    except OSError as exc:
        raise ClientError(f"cannot write {target}: {exc.strerror}") from exc
    finally:
        with suppress(FileNotFoundError):
            partial.unlink()
    return target


def suggested_name(response: httpx.Response) -> str:
    found = _FILENAME.search(response.headers.get("content-disposition", ""))
    name = Path(found.group(1)).name if found else ""
    return name or Path(response.url.path).name or "download"


# --- the four transfers ----------------------------------------------------------------------------

def upload(conn: GhostConnection, path: Path, folder: str | None, console: Console) -> dict[str, Any]:
    return send_file(conn, "/api/upload", path, console, data={"path": folder} if folder else None)


def download(conn: GhostConnection, remote: str, dest: Path | str | None, console: Console) -> Path | str:
    if ".." in remote.replace("\\", "/").split("/"):
        # URLs resolve `..` before sending: the request would reach another route, not the file.
        raise ClientError(f"invalid sandbox path {remote!r}: '..' is not allowed")
    dest = dest if dest is not None else Path(Path(remote).name or "download")
    with conn.stream("GET", "/api/download/" + quote(remote.lstrip("/"), safe="/")) as response:
        return receive_file(response, dest, console)


def save_workspace(conn: GhostConnection, dest: Path | str, console: Console,
                   history: list[dict[str, Any]] | None = None) -> Path | str:
    body = {"chat_history": history} if history is not None else None
    with conn.stream("POST", "/api/workspace/save", json=body) as response:
        return receive_file(response, dest, console)


def load_workspace(conn: GhostConnection, path: Path, console: Console) -> dict[str, Any]:
    return send_file(conn, "/api/workspace/load", path, console)
