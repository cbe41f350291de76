"""Single files in and out of the sandbox: the services behind /api/upload and /api/download.

Upload: the multipart body streams into a temp file next to the sandbox (capped, never whole in
memory); only a complete upload is renamed into place, so a failed, refused or oversized upload
leaves nothing in the sandbox. Download: the file is checked (inside the sandbox after following
every link, a regular file) and served by Starlette's FileResponse, which streams from a worker
thread and answers range requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import mimetypes
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from fastapi.responses import FileResponse
from starlette.requests import Request

from ghost.errors import BadRequest, NotFound, UnsafePath
from ghost.runtime import Runtime
from ghost.sandbox.paths import relative_name, resolve_in_sandbox
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
            target = await in_thread_to_completion(place_file, runtime.sandbox_root, name, received.path)
    finally:
        await in_thread_to_completion(_remove_quietly, received.path)
    return Uploaded(filename=relative_name(runtime.sandbox_root, target), size=received.size)


def target_name(folder: str, filename: str | None) -> str:
    if not filename:
        raise BadRequest("the 'file' part has no filename")
    return f"{folder.rstrip('/')}/{filename}" if folder.strip("/") else filename


def place_file(root: Path, name: str, temp: Path) -> Path:
    """Move the finished upload to `name` in the sandbox (UnsafePath for bad names)."""
    target = resolve_in_sandbox(root, name)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            raise BadRequest(f"'{name}' is a folder")
        _move_into_place(temp, target)
    except (NotADirectoryError, FileExistsError) as exc:
        raise BadRequest(f"cannot create '{name}': a file is in the way") from exc
    return target


def _move_into_place(temp: Path, target: Path) -> None:
    try:
        os.replace(temp, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        # The sandbox is on another filesystem than Ghost's temp space: copy beside the target,
        # then rename, so the target still appears whole or not at all.
        beside = target.with_name(f".{target.name}.ghost-upload")
        try:
            shutil.copyfile(temp, beside)
            os.replace(beside, target)
        finally:
            beside.unlink(missing_ok=True)


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


async def download_response(runtime: Runtime, filename: str) -> FileResponse:
    """A streaming response for a sandbox file; 404 if it is not there (or not allowed), 400 for a folder."""
    try:
        path = resolve_in_sandbox(runtime.sandbox_root, filename)
    except UnsafePath as exc:
        # Malformed names get the same answer as missing files: nothing to probe.
        raise NotFound(f"file '{filename}' not found") from exc
    try:
        info = await asyncio.to_thread(os.stat, path)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise NotFound(f"file '{filename}' not found") from exc
    if stat.S_ISDIR(info.st_mode):
        raise BadRequest(f"'{filename}' is a folder; download its files one by one, or save the workspace")
    if not stat.S_ISREG(info.st_mode):
        raise NotFound(f"file '{filename}' not found")
    return FileResponse(path, stat_result=info, filename=path.name, media_type=_media_type(path))


def _media_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"
