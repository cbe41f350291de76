"""Single files in and out of the sandbox: the services behind /api/upload and /api/download.

Upload: the route streams the multipart body into a temp file next to the sandbox (capped, never
whole in memory, `ghost.api.receive`); only a complete upload is renamed into place, so a failed,
refused or oversized upload leaves nothing in the sandbox. Both go through the fd-based file layer
(`ghost.sandbox.fs`): the target folder is opened beneath the sandbox root without following
links, and the upload is renamed into that folder's fd (or, across filesystems, copied into a
random `O_EXCL` temp name there first). Download: the file is opened the same way and checked with
`fstat` to be a regular file; the route serves that open file (`ghost.api.file_response`), the very
file Ghost opened, whatever the sandbox renames meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from pathlib import Path

from ghost.errors import BadRequest, NotFound, UnsafePath
from ghost.sandbox import fs, fspool
from ghost.sandbox.paths import shown_user_path
from ghost.workspace.service import Workspace
from ghost.workspace.tasks import in_thread_to_completion


async def place_upload(workspace: Workspace, temp: Path, name: str) -> str:
    """Move a received upload (a temp file outside the sandbox, removed here) to `name` in it."""
    try:
        # Shared hold: a workspace load must not swap the sandbox between the check and the rename.
        async with workspace.gate.turn():
            return await in_thread_to_completion(place_file, workspace.sandbox_root, name, temp)
    finally:
        await in_thread_to_completion(_remove_quietly, temp)


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
                raise BadRequest(f"'{shown_user_path(name)}' is a folder")
            if info is not None and stat.S_ISLNK(info.st_mode):
                raise fs.through_link(name)
            _move_into_place(temp, folder, file_name)
    except (NotADirectoryError, FileExistsError) as exc:
        raise BadRequest(f"cannot create '{shown_user_path(name)}': a file is in the way") from exc
    return shown_user_path(name)


def _move_into_place(temp: Path, folder: int, name: str) -> None:
    """Rename Ghost's temp file (outside the sandbox) to `name` in the folder's fd."""
    if (owner := fs.owner()) is not None:
        os.chown(temp, *owner)  # in Ghost's private temp folder: no one else can swap it
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


async def open_download(workspace: Workspace, filename: str) -> tuple[int, os.stat_result]:
    """(fd, fstat) of a sandbox file; 404 if it is not there (or not allowed), 400 for a folder."""
    return await fspool.run(open_for_download, workspace.sandbox_root, filename)


def open_for_download(root: Path, filename: str) -> tuple[int, os.stat_result]:
    """(fd, fstat) of a regular file; NotFound for anything else, a link or a malformed name included."""
    try:
        with fs.parent_of(root, filename) as (folder, name):
            info = fs.lstat_at(folder, name)
            if info is not None and stat.S_ISDIR(info.st_mode):
                raise BadRequest(f"'{shown_user_path(filename)}' is a folder; download its files one by one, or save the workspace")
            fd = fs.open_regular(folder, name, user_path=filename)
    except (UnsafePath, OSError) as exc:
        # Malformed names, links, FIFOs get the same answer as missing files: nothing to probe.
        raise NotFound(f"file '{shown_user_path(filename)}' not found") from exc
    return fd, os.fstat(fd)
