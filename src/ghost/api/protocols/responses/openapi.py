"""The Responses API routes in Ghost's OpenAPI document: the request model the route validates
with, the reply (the response object, or its typed event stream) and the errors."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ghost.api import openapi
from ghost.api.protocols.responses.request import ResponsesBody


class ResponseObject(BaseModel):
    """An OpenAI Responses API `response` (documented in outline; see docs/clients.md)."""

    model_config = ConfigDict(extra="allow")
    id: str = Field(description="`resp_<hex>`.")
    object: Literal["response"]
    created_at: int
    status: Literal["completed", "incomplete", "failed", "in_progress"]
    model: str
    output: list[dict[str, Any]] = Field(description="`message`, `reasoning` and `function_call` items.")
    usage: dict[str, Any] | None = None


class ResponseEvent(BaseModel):
    """One typed event of a streamed response."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(description="`response.created` … `response.completed`; `error` on a failure.")
    sequence_number: int


class ResponseDeleted(BaseModel):
    id: str
    object: Literal["response.deleted"]
    deleted: Literal[True]


_EVENTS = {"text/event-stream": {"schema": {
    "description": "Server-sent events: `event: <type>` and `data:` one ResponseEvent (JSON) each, from "
    "`response.created` to `response.completed` / `response.incomplete` (or `error` then "
    "`response.failed`); keep-alive comment lines while idle.",
    "type": "object", "required": ["data"], "properties": {
        "event": {"type": "string"}, "data": {"contentMediaType": "application/json",
                                              "contentSchema": openapi.ref(ResponseEvent)}}}}}
_STORED_ID = {"parameters": [{"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}]}
_NOT_STORED = {404: "No stored response of this workspace has this id."}

CREATE = openapi.route_doc(
    {"content": {**openapi.json_content(ResponseObject), **_EVENTS},
     "headers": dict(openapi.SESSION_REPLY_HEADER)},
    {**openapi.CHAT_ERRORS,
     400: "Not a JSON object, or a field, item, part or tool Ghost does not serve (the message names it).",
     404: "The model is not one this server serves, or `previous_response_id` names no stored response.",
     422: "A front end's user header (`--user-headers`) is not a valid user name, or is sent twice."},
    description="A `response` object, or with `stream: true` its typed events.",
    extra=openapi.json_body(ResponsesBody, required=True))
GET = openapi.route_doc({"content": openapi.json_content(ResponseObject)}, _NOT_STORED, extra=_STORED_ID)
DELETE = openapi.route_doc({"content": openapi.json_content(ResponseDeleted)}, _NOT_STORED, extra=_STORED_ID)
