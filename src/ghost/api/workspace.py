"""Workspace routes: save and load the whole workspace as a zip, upload and download single files.

Thin: each route parses the request, calls one service in `ghost.workspace`, and responds.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from starlette.convertors import PathConvertor, register_url_convertor

from ghost.api import openapi
from ghost.api.auth import require_key
from ghost.api.session_id import SESSION_HEADER, session_id as valid_session_id
from ghost.api.deps import get_runtime, read_json_object
from ghost.api.streaming import WatchedStreamingResponse
from ghost.config import Settings
from ghost.errors import Unprocessable
from ghost.runtime import Runtime
from ghost.workspace.archive import archive_chunks, load_workspace, save_workspace
from ghost.workspace.transfer import download_response, upload_file

router = APIRouter(dependencies=[Depends(require_key)])


class AnyPathConvertor(PathConvertor):
    """Starlette's `path`, across line breaks too: its `.*` stops at one, and a file name holding one
    would then miss the download route and be proxied upstream."""

    regex = "(?s:.*)"


register_url_convertor("anypath", AnyPathConvertor())

# Room for the multipart framing around a file of exactly the upload cap.
MULTIPART_SLACK = 1024 * 1024
UPLOAD_PATHS = ("/api/upload", "/api/workspace/load")


def body_limits(settings: Settings) -> dict[str, int]:
    """Per-path body caps for the body-size middleware: uploads get theirs, not the JSON cap."""
    return {path: settings.upload_max_bytes + MULTIPART_SLACK for path in UPLOAD_PATHS}


def session_id_of(request: Request, body: dict[str, Any] | None = None) -> str:
    """The JSON body's `session_id`, else the X-Ghost-Session header, else "default"."""
    return valid_session_id((body or {}).get("session_id") or request.headers.get(SESSION_HEADER))


async def _session_to_save(request: Request, body: dict[str, Any], runtime: Runtime) -> str:
    """The asked session; without one, the conversation stored last (chats without an id get fresh ids)."""
    if (body or {}).get("session_id") or request.headers.get(SESSION_HEADER):
        return session_id_of(request, body)
    return await runtime.agent.history.latest() or "default"


@router.post("/api/workspace/save", summary="Download the workspace as a zip", **openapi.SAVE)
async def save(request: Request, runtime: Runtime = Depends(get_runtime)) -> WatchedStreamingResponse:
    body = await read_json_object(request, allow_empty=True)
    history = body.get("chat_history")
    if history is not None and not isinstance(history, list):
        raise Unprocessable("chat_history must be a list of messages")
    saved = await save_workspace(runtime, await _session_to_save(request, body, runtime), history)
    return WatchedStreamingResponse(
        archive_chunks(saved.archive),
        media_type="application/zip",
        headers={
            "content-disposition": f"attachment; filename={saved.filename}",
            "content-length": str(saved.archive.size),
        },
    )


@router.post("/api/workspace/load", summary="Replace the workspace with an uploaded zip", **openapi.LOAD)
async def load(request: Request, runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    result = await load_workspace(runtime, request, session_id_of(request))
    return {"status": "success", "chat_history": result.chat_history, "files": result.files}


@router.post("/api/upload", summary="Upload a file into the sandbox", **openapi.UPLOAD)
async def upload(request: Request, runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    uploaded = await upload_file(runtime, request)
    return {"status": "success", "filename": uploaded.filename, "size": uploaded.size}


@router.get("/api/download/{filename:anypath}", summary="Download a file from the sandbox", **openapi.DOWNLOAD)
async def download(filename: str, runtime: Runtime = Depends(get_runtime)) -> FileResponse:
    return await download_response(runtime, filename)
