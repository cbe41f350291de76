"""Stored chat history, one conversation per session id."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from ghost.api import openapi
from ghost.api.auth import require_key
from ghost.api.session_id import session_id as valid_session_id
from ghost.errors import NotFound
from ghost.api.caller import get_workspace
from ghost.store.history import History
from ghost.workspace.service import Workspace

router = APIRouter(dependencies=[Depends(require_key)])


async def history(workspace: Workspace = Depends(get_workspace)) -> History:
    return workspace.history


@router.get("/api/sessions", summary="List sessions with stored history", **openapi.SESSIONS)
async def list_sessions(store: History = Depends(history)) -> dict[str, Any]:
    return {"sessions": await store.list()}


@router.get("/api/sessions/{session_id}", summary="One session's stored history", **openapi.SESSION)
async def get_session(session_id: str, store: History = Depends(history)) -> dict[str, Any]:
    found = await store.get(valid_session_id(session_id))
    if found is None:
        raise NotFound(f"session '{session_id}' not found")
    return found


@router.delete("/api/sessions/{session_id}", summary="Delete one session's history", **openapi.SESSION_DELETE)
async def delete_session(session_id: str, store: History = Depends(history)) -> dict[str, Any]:
    if not await store.delete(valid_session_id(session_id)):
        raise NotFound(f"session '{session_id}' not found")
    return {"status": "deleted", "id": session_id}
