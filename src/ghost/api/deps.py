"""Small FastAPI dependencies shared by routes."""

from __future__ import annotations

import json

from fastapi import Request

from ghost.errors import BadRequest, Unprocessable

from ghost.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    # async: FastAPI would run a plain function in its thread pool, on every request
    return request.app.state.runtime


def request_id(request: Request) -> str:
    return request.scope.get("ghost.request_id", "")


async def read_json_object(request: Request, *, allow_empty: bool = False) -> dict:
    """The request body as a JSON object: 400 if it is not JSON, 422 if it is not an object."""
    raw = await request.body()
    if not raw.strip():
        if allow_empty:
            return {}
        raise BadRequest("request body is empty; expected a JSON object")
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise Unprocessable("request body must be a JSON object")
    return payload
