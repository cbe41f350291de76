"""Workspace routes: save and load the whole workspace as a zip, upload and download single files.

Thin: each route parses the request, calls one service in `ghost.workspace`, and responds.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse

from ghost.api import openapi
from ghost.api.auth import require_key
from ghost.api.deps import read_json_object
from ghost.api.file_response import OpenFileResponse
from ghost.api import route_table  # noqa: F401  (registers the `anypath` convertor of the download route)
from ghost.api.receive import Received, content_type, receive_multipart, receive_raw
from ghost.api.caller import get_workspace
from ghost.api.session_id import SESSION_HEADER, session_id as valid_session_id
from ghost.api.streaming import WatchedStreamingResponse
from ghost.api.services import settings_of
from ghost.errors import BadRequest, Unprocessable
from ghost.sandbox.names import shown_name
from ghost.sandbox.paths import split_relative
from ghost.workspace.archive import archive_chunks, load_workspace, save_workspace
from ghost.workspace.layout import require_tmp_dir
from ghost.workspace.service import Workspace
from ghost.workspace.transfer import open_download, place_upload, target_name

router = APIRouter(dependencies=[Depends(require_key)])


RAW_ZIP_TYPES = frozenset({"application/zip", "application/x-zip-compressed", "application/octet-stream"})


def session_id_of(request: Request, body: dict[str, Any] | None = None) -> str:
    """The JSON body's `session_id`, else the X-Ghost-Session header, else "default"."""
    return valid_session_id((body or {}).get("session_id") or request.headers.get(SESSION_HEADER))


async def _session_to_save(request: Request, body: dict[str, Any], workspace: Workspace) -> str:
    """The asked session; without one, the conversation stored last (chats without an id get fresh ids)."""
    if (body or {}).get("session_id") or request.headers.get(SESSION_HEADER):
        return session_id_of(request, body)
    return await workspace.history.latest() or "default"


@router.post("/api/workspace/save", summary="Download the workspace as a zip", **openapi.SAVE)
async def save(request: Request, workspace: Workspace = Depends(get_workspace)) -> WatchedStreamingResponse:
    body = await read_json_object(request, allow_empty=True)
    history = body.get("chat_history")
    if history is not None and not isinstance(history, list):
        raise Unprocessable("chat_history must be a list of messages")
    saved = await save_workspace(workspace, await _session_to_save(request, body, workspace), history)
    return WatchedStreamingResponse(
        archive_chunks(saved.archive),
        media_type="application/zip",
        headers={
            "content-disposition": f"attachment; filename={saved.filename}",
            "content-length": str(saved.archive.size),
        },
    )


@router.post("/api/workspace/load", summary="Replace the workspace with an uploaded zip", **openapi.LOAD)
async def load(request: Request, workspace: Workspace = Depends(get_workspace)) -> dict[str, Any]:
    session_id = session_id_of(request)
    await workspace.check_room()
    archive = await _receive_archive(request, workspace)
    try:
        result = await load_workspace(workspace, archive.path, session_id)
    finally:
        workspace.written()
    return {"status": "success", "chat_history": result.chat_history, "files": result.files}


async def _receive_archive(request: Request, workspace: Workspace) -> Received:
    """The uploaded zip, from a multipart `file` field or a raw zip body, streamed to disk."""
    kind, _ = content_type(request)
    tmp, cap = require_tmp_dir(workspace.sandbox_root), settings_of(request).upload_max_bytes
    if kind == "multipart/form-data":
        return await receive_multipart(request, tmp, cap, prefix="load-")
    if kind in RAW_ZIP_TYPES:
        return await receive_raw(request, tmp, cap, prefix="load-")
    raise BadRequest("send the archive as multipart field 'file' or as an application/zip body")


@router.post("/api/upload", summary="Upload a file into the sandbox", **openapi.UPLOAD)
async def upload(request: Request, workspace: Workspace = Depends(get_workspace)) -> dict[str, Any]:
    kind, _ = content_type(request)
    if kind != "multipart/form-data":
        raise BadRequest("send the file as multipart/form-data, field 'file'")
    await workspace.check_room()
    received = await receive_multipart(request, require_tmp_dir(workspace.sandbox_root),
                                       settings_of(request).upload_max_bytes, prefix="upload-")
    folder = received.fields.get("path") or request.query_params.get("path") or ""
    try:
        name = target_name(folder, received.filename)
    except BadRequest:
        received.path.unlink(missing_ok=True)
        raise
    try:
        placed = await place_upload(workspace, received.path, name)
    finally:
        workspace.written()
    return {"status": "success", "filename": placed, "size": received.size}


@router.get("/api/download/{filename:anypath}", summary="Download a file from the sandbox", **openapi.DOWNLOAD)
async def download(filename: str, workspace: Workspace = Depends(get_workspace)) -> FileResponse:
    fd, info = await open_download(workspace, filename)
    return OpenFileResponse(fd, info, shown_name(split_relative(filename)[-1]))
