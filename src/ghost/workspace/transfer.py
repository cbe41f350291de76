"""Single files in and out of the sandbox: the services behind /api/upload and /api/download.

Upload: the multipart body streams into a temp file next to the sandbox (capped, never whole in
memory); only a complete upload is renamed into place, so a failed, refused or oversized upload
leaves nothing in the sandbox. Both go through the fd-based file layer (`ghost.sandbox.fs`): the
target folder is opened beneath the sandbox root without following links, and the upload is
renamed into that folder's fd (or, across filesystems, copied into a random `O_EXCL` temp name
there first). Download: the file is opened the same way, checked with `fstat` to be a regular
file, and served from that open file (`OpenFileResponse`): Starlette's FileResponse, which
streams in a worker thread and answers range requests, reading `/proc/self/fd/N` — the very
file Ghost opened, whatever the sandbox renames meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import mimetypes
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.responses import FileResponse
from starlette.requests import Request

from ghost.errors import BadRequest, NotFound, UnsafePath
from ghost.runtime import Runtime
from ghost.sandbox import fs, fspool
from ghost.sandbox.paths import split_relative
from ghost.workspace.layout import require_tmp_dir
from ghost.workspace.receive import content_type, receive_multipart
from ghost.workspace.tasks import in_thread_to_completion


@dataclass(frozen=True)
class Uploaded:
    filename: str  # where it landed, relative to the sandbox
    size: int


async def upload_file(runtime: Runtime, request: Request) -> Uploaded:
    kind, _ = content_type(request)
    if kind != "multipart/form-data":
        raise BadRequest("send the file as multipart/form-data, field 'file'")
    received = await receive_multipart(
        request, require_tmp_dir(runtime.sandbox_root), runtime.settings.upload_max_bytes, prefix="upload-")
    try:
        folder = received.fields.get("path") or request.query_params.get("path") or ""
        name = target_name(folder, received.filename)
        # Shared hold: a workspace load must not swap the sandbox between the check and the rename.
        async with runtime.gate.turn():
            placed = await in_thread_to_completion(place_file, runtime.sandbox_root, name, received.path)
    finally:
        await in_thread_to_completion(_remove_quietly, received.path)
    return Uploaded(filename=placed, size=received.size)


def target_name(folder: str, filename: str | None) -> str:
    if not filename:
        raise BadRequest("the 'file' part has no filename")
    return f"{folder.rstrip('/')}/{filename}" if folder.strip("/") else filename


def place_file(root: Path, name: str, temp: Path) -> str:
    """Move the finished upload to `name` in the sandbox; where it landed (UnsafePath for bad names)."""
    try:
        with fs.parent_of(root, name, create=True) as (folder, file_name):
            info = fs.lstat_at(folder, file_name)
            if info is not None and stat.S_ISDIR(info.st_mode):
                raise BadRequest(f"'{name}' is a folder")
            if info is not None and stat.S_ISLNK(info.st_mode):
                raise fs.through_link(name)
            _move_into_place(temp, folder, file_name)
    except (NotADirectoryError, FileExistsError) as exc:
        raise BadRequest(f"cannot create '{name}': a file is in the way") from exc
    return "/".join(split_relative(name))


def _move_into_place(temp: Path, folder: int, name: str) -> None:
    """Rename Ghost's temp file (outside the sandbox) to `name` in the folder's fd."""
    try:
        os.rename(temp, name, dst_dir_fd=folder)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        # The sandbox is on another filesystem than Ghost's temp space: copy into a fresh temp
        # file beside the target (random name, O_EXCL, never a link), then rename it over.
        fd, beside = fs.create_temp(folder, f".{name[:200]}.ghost-upload-")
        try:
            with open(temp, "rb") as source, open(fd, "wb") as sink:
                shutil.copyfileobj(source, sink)
            os.rename(beside, name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            fs.unlink_quietly(folder, beside)
            raise


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class OpenFileResponse(FileResponse):
    """FileResponse for a file Ghost already opened: reads it as /proc/self/fd/N, closes it after."""

    def __init__(self, fd: int, info: os.stat_result, filename: str) -> None:
        super().__init__(f"/proc/self/fd/{fd}", stat_result=info, filename=filename,
                         media_type=_media_type(filename))
        self.fd = fd

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            os.close(self.fd)


async def download_response(runtime: Runtime, filename: str) -> OpenFileResponse:
    """A streaming response for a sandbox file; 404 if it is not there (or not allowed), 400 for a folder."""
    fd, info = await fspool.run(open_for_download, runtime.sandbox_root, filename)
    return OpenFileResponse(fd, info, split_relative(filename)[-1])


def open_for_download(root: Path, filename: str) -> tuple[int, os.stat_result]:
    """(fd, fstat) of a regular file; NotFound for anything else, a link or a malformed name included."""
    try:
        with fs.parent_of(root, filename) as (folder, name):
            info = fs.lstat_at(folder, name)
            if info is not None and stat.S_ISDIR(info.st_mode):
                raise BadRequest(f"'{filename}' is a folder; download its files one by one, or save the workspace")
            fd = fs.open_regular(folder, name, user_path=filename)
    except (UnsafePath, OSError) as exc:
        # Malformed names, links, FIFOs get the same answer as missing files: nothing to probe.
        raise NotFound(f"file '{filename}' not found") from exc
    return fd, os.fstat(fd)


def _media_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"
