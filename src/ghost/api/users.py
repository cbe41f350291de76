"""User management (admin only): users, their keys, their limits. Contract: API.md, "Users"."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from ghost.api import openapi
from ghost.api.auth import require_admin, require_key
from ghost.api.deps import read_json_object
from ghost.api.services import Services, get_services, settings_of
from ghost.errors import NotFound, Unprocessable
from ghost.sandbox import fspool
from ghost.sandbox.fswalk import remove_path
from ghost.store.users import valid_name
from ghost.workspace.service import WORKSPACES_DIR

router = APIRouter(dependencies=[Depends(require_key), Depends(require_admin)])


@router.post("/api/users", summary="Create a user and its first key", **openapi.USER_CREATE)
async def create_user(request: Request, services: Services = Depends(get_services)) -> dict[str, Any]:
    body = await read_json_object(request)
    name, role = body.get("name"), body.get("role", "user")
    key_id, key = await services.users.create(name, role)
    return {"name": name, "role": role, "key": key, "key_id": key_id}


@router.get("/api/users", summary="List users, their keys and usage", **openapi.USER_LIST)
async def list_users(services: Services = Depends(get_services)) -> dict[str, Any]:
    users = await services.users.list()
    for user in users:
        space = services.spaces.peek(user["name"])
        turns = user.pop("turns")
        sandbox = await space.limits.usage() if space is not None else None
        user["usage"] = {"sandbox_bytes": sandbox, "turns": turns}
        user["workspace_open"] = space is not None
    return {"users": users}


@router.delete("/api/users/{name}", summary="Delete a user (its keys stop working at once)",
               **openapi.USER_DELETE)
async def delete_user(request: Request, name: str, purge: bool = False,
                      services: Services = Depends(get_services)) -> Response:
    if not await services.users.delete(name, purge):
        raise NotFound(f"user '{valid_name(name)}' not found")
    await services.spaces.close(name)
    if purge:
        # The sandbox under the workspace root (shared by replicas) and this replica's MCP state.
        settings = settings_of(request)
        for base in {settings.workspaces_path, settings.home}:
            await fspool.run(remove_path, base / WORKSPACES_DIR / name)
    return Response(status_code=204)


@router.post("/api/users/{name}/keys", summary="Add a key for a user", **openapi.KEY_CREATE)
async def add_key(name: str, services: Services = Depends(get_services)) -> dict[str, Any]:
    key_id, key = await services.users.add_key(name)
    return {"name": name, "key": key, "key_id": key_id}


@router.delete("/api/users/{name}/keys/{key_id}", summary="Delete one of a user's keys", **openapi.KEY_DELETE)
async def delete_key(name: str, key_id: str, services: Services = Depends(get_services)) -> Response:
    if not await services.users.delete_key(name, key_id):
        raise NotFound(f"user '{valid_name(name)}' has no key '{key_id[:64]}'")
    return Response(status_code=204)


@router.put("/api/users/{name}/limits", summary="Set a user's own limits (null: back to the default)",
            **openapi.USER_LIMITS)
async def set_limits(name: str, request: Request, services: Services = Depends(get_services)) -> dict[str, Any]:
    body = await read_json_object(request)
    if not body:
        raise Unprocessable("send the limits to set, e.g. {\"turns_per_minute\": 10}")
    return {"name": name, "limits": await services.users.set_limits(name, body)}
