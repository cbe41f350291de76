"""Small FastAPI dependencies shared by routes."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from functools import partial

from fastapi import Request

from ghost.api.services import settings_of
from ghost.errors import BadRequest, Unprocessable
from ghost.jsondepth import nests_deeper, too_deep


def request_id(request: Request) -> str:
    return request.scope.get("ghost.request_id", "")


async def read_json_object(request: Request, *, allow_empty: bool = False) -> dict:
    """The request body as a JSON object: 400 if it is not JSON or nests too deep, 422 if it is not
    an object."""
    raw = await request.body()
    if not raw.strip():
        if allow_empty:
            return {}
        raise BadRequest("request body is empty; expected a JSON object")
    limit = settings_of(request).max_json_depth
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        await check_json_depth(raw, limit)  # malformed and too deep: told it is too deep, as ever
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # nested past Python's recursion limit: the text says how deep
        await check_json_depth(raw, limit)
        raise BadRequest("request body nests too deeply") from exc
    # Measured on the parsed value: its containers, not every character of its strings (issue 27).
    await _refuse_if_deep(partial(nests_deeper, payload, limit), len(raw), limit)
    if _SURROGATE_ESCAPE.search(raw) and _holds_lone_surrogate(payload):
        raise BadRequest("request body holds a lone UTF-16 surrogate escape (such as \\udcff), which is "
                         "no character: send text as UTF-8, or a pair of surrogates for one character")
    if not isinstance(payload, dict):
        raise Unprocessable("request body must be a JSON object")
    return payload


async def read_json_object_or_400(request: Request) -> dict:
    """`read_json_object`, with a body that is not an object a 400 too: the Responses and Messages
    APIs answer every bad body with a 400 (OpenAI's and Anthropic's `invalid_request_error`)."""
    try:
        return await read_json_object(request)
    except Unprocessable as exc:
        raise BadRequest(exc.message) from None


# JSON may write a character as a surrogate pair (`\ud83d\ude00`, as clients with ASCII-only output
# do); one surrogate alone is no character, and no UTF-8 can carry it: let in, it would fail every
# later step that encodes the conversation (the session digest, the history, the upstream request).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _holds_lone_surrogate(payload: object) -> bool:
    try:
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


OFF_LOOP_BYTES = 64 * 1024  # larger bodies are measured in a worker thread


async def check_json_depth(raw: bytes, limit: int) -> None:
    """400 if the JSON text nests deeper than `limit` (before the recursive parser sees it)."""
    await _refuse_if_deep(partial(too_deep, raw, limit), len(raw), limit)


async def _refuse_if_deep(measure: Callable[[], bool], size: int, limit: int) -> None:
    deep = measure() if size <= OFF_LOOP_BYTES else await asyncio.to_thread(measure)
    if deep:
        raise BadRequest(f"request body nests deeper than {limit} levels (--max-json-depth)")
