"""Ghost's OpenAPI document: what each route takes and answers, attached without changing behaviour.

Routes read their own bodies (`read_json_object`, streamed multipart), so FastAPI sees no body
parameter and no reply model. This module supplies both, as keyword arguments for the route
decorators (`@router.post(path, **openapi.OPENAI_CHAT)`): `response_model=None` (replies stay the plain
dicts they are), `responses=` and `openapi_extra=`. The chat routes' request schemas are the models
they validate their bodies with (`ghost.api.bodies`); the rest of this module is documentation only.

`openapi_document` then finishes the document from the routes themselves: the security schemes,
and on every operation whether it needs the key (read from its `require_key` dependency, so it
cannot disagree with what is enforced) with the 401 that follows; the `X-Request-ID` header every
reply carries; one operation id per method of the catch-all proxy; the models' JSON schemas.

Streams: an SSE reply's `schema` describes one event (its `data` is a JSON chunk, an `event: error`
carries the error shape, the last is `[DONE]`); an NDJSON reply's `schema` is the array of its lines.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, routing
from fastapi.responses import Response
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from ghost.api import bodies, schemas as s
from ghost.api.auth import require_key
from ghost.api.protocols.anthropic import request as anthropic_request, schemas as anthropic_schemas
from ghost.api import session_id
from ghost.api.route_table import Shape, shape_for

REF = "#/components/schemas/{model}"
_MODELS: dict[str, type[BaseModel]] = {}
SECURITY_SCHEMES = {
    "ghostKey": {"type": "apiKey", "in": "header", "name": "X-Ghost-Key",
                 "description": "The Ghost API key (`--api-key`)."},
    "bearer": {"type": "http", "scheme": "bearer",
               "description": "The Ghost API key as a bearer token (for OpenAI and Ollama clients)."},
    "anthropicKey": {"type": "apiKey", "in": "header", "name": "x-api-key",
                     "description": "The Ghost API key as Anthropic's clients send theirs."},
}
KEYED = [{"ghostKey": []}, {"bearer": []}, {"anthropicKey": []}]
REQUEST_ID_HEADER = {"X-Request-ID": {
    "description": "The request's id: the client's own if valid, else a fresh one.",
    "required": True, "schema": {"type": "string"}}}


def ref(model: type[BaseModel]) -> dict[str, str]:
    """A reference to `model`'s schema, which the document will then carry in its components."""
    _MODELS[model.__name__] = model
    return {"$ref": REF.format(model=model.__name__)}


# --- pieces of an operation -----------------------------------------------------------------------


def json_content(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": ref(model)}}


def sse_content(chunk: type[BaseModel]) -> dict[str, Any]:
    def data_as(model: type[BaseModel]) -> dict[str, Any]:
        return {"properties": {"data": {"contentMediaType": "application/json", "contentSchema": ref(model)}}}

    event = {
        "type": "object", "required": ["data"],
        "properties": {"event": {"enum": ["message", "error"]}, "data": {"type": "string"}},
        "if": {"properties": {"data": {"const": "[DONE]"}}},
        "then": {},
        "else": {"if": {"properties": {"event": {"const": "error"}}, "required": ["event"]},
                 "then": data_as(s.ErrorResponse), "else": data_as(chunk)},
    }
    return {"text/event-stream": {"schema": {
        "description": f"Server-sent events, one per {chunk.__name__} (`data:` JSON), keep-alive comment "
        "lines while idle; a failure after the start is an `event: error` with the error shape; "
        "the last event is `data: [DONE]`.", **event}}}


def ndjson_content(line: type[BaseModel]) -> dict[str, Any]:
    return {"application/x-ndjson": {"schema": {
        "description": f"One JSON object per line: {line.__name__}s, the last with `done: true`; a "
        "failure after the start ends the stream with a line `{\"error\": \"...\"}`.",
        "type": "array", "items": {"anyOf": [ref(line), ref(s.StreamError)]}}}}


def binary_content(media_type: str) -> dict[str, Any]:
    return {media_type: {"schema": {"type": "string", "format": "binary"}}}


def json_body(model: type[BaseModel], *, required: bool) -> dict[str, Any]:
    return {"requestBody": {"required": required, "content": json_content(model)}}


def error(description: str, *, ollama: bool = False, anthropic: bool = False) -> dict[str, Any]:
    """An error reply: Ghost's shape, on an Ollama route Ollama's `{"error": "..."}`, on the Messages
    API's routes Anthropic's `{"type": "error", "error": {...}}`."""
    model = anthropic_schemas.AnthropicError if anthropic else s.OllamaError if ollama else s.ErrorResponse
    return {"description": description, "content": json_content(model)}


def route_doc(ok: dict[str, Any], errors: dict[int, str], *, description: str = "",
              extra: dict[str, Any] | None = None, more: dict[int, dict[str, Any]] | None = None,
              raw: bool = False, ollama: bool = False, anthropic: bool = False) -> dict[str, Any]:
    """Keyword arguments for a route decorator: its replies, and anything else for the operation.

    `raw`: the route returns a non-JSON Response itself; its `response_class` then only keeps FastAPI
    from documenting a JSON reply (a Response a route returns is sent as it is).
    `ollama`: an Ollama route, whose errors are in Ollama's shape.
    """
    responses: dict[int | str, dict[str, Any]] = {200: {"description": description or "Success", **ok}}
    responses.update(more or {})
    responses.update({status: error(text, ollama=ollama, anthropic=anthropic) for status, text in errors.items()})
    kwargs = {"response_model": None, "responses": responses, "openapi_extra": extra or {}}
    return {**kwargs, "response_class": Response} if raw else kwargs


BAD_JSON = "The body is not JSON (or is empty)."
BAD_FIELD = "A field has the wrong type or value (the message names it)."
TOO_LARGE = "The body is larger than the limit for this route."
UPSTREAM_BROKEN = ("The upstream is unreachable, answered with an error or nonsense, or sent more than "
                   "Ghost's bounds allow (type `upstream_reply_too_large`).")
FORBIDDEN = ("The Host header names neither a loopback address, the bound address nor one of "
             "--allowed-hosts (DNS rebinding), or a browser Origin outside --cors-origins. Checked "
             "before routing, on every path.")
# (Past --max-connections uvicorn itself answers a plain-text 503, before Ghost sees the request,
# so without a request id or the error shape: docs/security.md says so rather than this document.)
UPSTREAM_SLOW = "The upstream took longer than the read timeout."
MODEL_FAILED = "The bundled model server kept failing and was given up on (`model_unavailable`; the reason is in the message and in /api/health)."
SESSION_HEADER = {"name": session_id.SESSION_HEADER, "in": "header", "required": False,
                  "description": "Session id, when the body has no `session_id`.",
                  "schema": {"type": "string", "pattern": session_id.SESSION_ID_PATTERN}}

CHAT_ERRORS = {
    400: BAD_JSON + " Or it nests deeper than --max-json-depth.", 404: "The model is not one this server serves.", 409: "A workspace load held the "
    "workspace past the wait.", 413: TOO_LARGE, 422: BAD_FIELD, 429: "Every turn slot stayed busy "
    "past the queue timeout, or the user is at their own turn limits (Retry-After says when to try "
    "again).", 507: "The user's sandbox folder is at its limit, or the disk is full.", 502: UPSTREAM_BROKEN, 503: MODEL_FAILED, 504: UPSTREAM_SLOW,
}
_CHAT_EXTRA = {"parameters": [SESSION_HEADER]}
SESSION_REPLY_HEADER = {session_id.SESSION_HEADER: {
    "description": "The session the turn is stored under (absent when it is stored nowhere: a plain "
    "model, or a request with a session id that does not continue that session).",
    "required": False, "schema": {"type": "string"}}}

# --- the routes ---------------------------------------------------------------------------------------

SMALL_BODY = "Routes without auth take only small bodies (--unauth-max-body-bytes)."
ROOT = route_doc({"content": {"text/plain": {"schema": {"type": "string", "const": "Ollama is running"}}}},
                 {413: SMALL_BODY})
VERSION = route_doc({"content": json_content(s.VersionInfo)}, {413: SMALL_BODY}, ollama=True)
TAGS = route_doc({"content": json_content(s.TagList)}, {413: SMALL_BODY}, ollama=True,
                 description="Each served model, then its plain variant `<name>-plain` (no agent: "
                 "for clients' title and tag tasks).")
PS = route_doc({"content": json_content(s.RunningList)}, {413: SMALL_BODY}, ollama=True,
               description="The served models (always loaded while Ghost runs).")
SHOW = route_doc({"content": json_content(s.ModelInfo)},
                 {400: "The body is not JSON, or nests deeper than --max-json-depth.", 404: "No such model.",
                  413: SMALL_BODY,
                  422: "The body is not a JSON object."},
                 extra=json_body(s.ShowRequest, required=False), ollama=True)
_EMBED_ERRORS = {400: BAD_JSON, 413: "The body is larger than the limit for this route.", 422: BAD_FIELD,
                 502: "The upstream is unreachable, failed, or has no /v1/embeddings.",
                 504: "The upstream took longer than the read timeout."}
EMBED = route_doc({"content": json_content(s.EmbedResponse)}, _EMBED_ERRORS, ollama=True,
                  extra=json_body(bodies.EmbedRequest, required=True))
EMBEDDINGS = route_doc({"content": json_content(s.EmbeddingResponse)}, _EMBED_ERRORS, ollama=True,
                       extra=json_body(bodies.EmbeddingsRequest, required=True))
PULL = route_doc(
    {"content": {**json_content(s.PullStatus), "application/x-ndjson": {"schema": {
        "description": "One status object per line, the last `{\"status\": \"success\"}`.",
        "type": "array", "items": ref(s.PullStatus)}}}},
    {400: BAD_JSON, 404: "The model is not one this server serves.", 413: TOO_LARGE, 422: BAD_FIELD},
    ollama=True, description="A served model is always present: succeeds at once (NDJSON status "
    "lines unless `stream: false`).", extra=json_body(bodies.ModelNameRequest, required=True))
MANAGE = route_doc({}, {400: BAD_JSON, 403: "Ghost serves a fixed set of models (`--model`).",
                        404: "No such model (delete).", 413: TOO_LARGE, 422: BAD_FIELD}, ollama=True,
                   description="Never: Ghost serves a fixed set of models.",
                   extra=json_body(bodies.ModelNameRequest, required=False))
MODELS = route_doc({"content": json_content(s.ModelList)}, {})
HEALTH = route_doc({"content": json_content(s.Health)}, {},
                   description="Always 200 while Ghost runs; `status` is `degraded` when the upstream does "
                   "not answer or sandboxed execution is unavailable (`sandbox.reason` says why).")
LIVE = route_doc({"content": json_content(s.LiveProbe)}, {},
                 description="200 while the process runs and its event loop answers (draining included).")
READY = route_doc({"content": json_content(s.ReadyProbe)}, {},
                  description="200 when this replica should get requests: the store answers, sandboxed "
                  "execution is available, and it is not draining after SIGTERM. Otherwise 503 with the "
                  "same body (`status`: starting, draining or unavailable; `checks` says which failed).",
                  more={503: {"description": "Not ready", "content": json_content(s.ReadyProbe)}})
METRICS = route_doc({"content": {"text/plain": {"schema": {"type": "string"}}}},
                    {403: "The key is not an admin's (the metrics show every user's counts)."}, raw=True,
                    description="Prometheus' text format (docs/observability.md). Needs an admin's key "
                    "unless Ghost runs with --metrics-public.")
OPENAI_CHAT = route_doc(
    {"content": {**json_content(s.ChatCompletion), **sse_content(s.ChatCompletionChunk)},
     "headers": dict(SESSION_REPLY_HEADER)}, CHAT_ERRORS,
    description="A `chat.completion`, or with `stream: true` an SSE stream of chunks. A `-plain` model "
    "answers with the upstream's own reply under Ghost's model name and id: every choice of `n`, "
    "`logprobs`, and any field that server adds (docs/clients.md).",
    extra={**json_body(bodies.ChatRequest, required=True), **_CHAT_EXTRA})
OLLAMA_CHAT = route_doc(
    {"content": {**json_content(s.OllamaChatResponse), **ndjson_content(s.OllamaChatChunk),
                 **sse_content(s.ChatCompletionChunk)}, "headers": dict(SESSION_REPLY_HEADER)}, CHAT_ERRORS,
    description="Streams NDJSON by default (SSE if the client sends `Accept: text/event-stream`); "
    "with `stream: false` one object in both Ollama's and OpenAI's shape.", ollama=True,
    extra={**json_body(bodies.ChatRequest, required=True), **_CHAT_EXTRA})
GENERATE = route_doc(
    {"content": {**json_content(s.GenerateResponse), **ndjson_content(s.GenerateChunk)}},
    CHAT_ERRORS, ollama=True,
    description="Streams NDJSON by default; with `stream: false` one object.",
    extra=json_body(bodies.GenerateRequest, required=True))
_ANTHROPIC_ERRORS = {**{status: text for status, text in CHAT_ERRORS.items() if status != 422},
                     400: BAD_JSON + " Or a field is wrong, or one this server cannot apply (the message names it)."}
ANTHROPIC_MESSAGES = route_doc(
    {"content": {**json_content(anthropic_schemas.AnthropicMessage), "text/event-stream": {"schema": {
        "description": "Server-sent events in Anthropic's order (`message_start`, per content block "
        "`content_block_start` / `content_block_delta`s / `content_block_stop`, `message_delta`, "
        "`message_stop`; `ping` while idle); a failure after the start is an `error` event.",
        "type": "object", "properties": {"event": {"type": "string"}, "data": {
            "type": "string", "contentMediaType": "application/json",
            "contentSchema": ref(anthropic_schemas.AnthropicStreamEvent)}}}}},
     "headers": dict(SESSION_REPLY_HEADER)}, _ANTHROPIC_ERRORS, anthropic=True,
    description="A `message`, or with `stream: true` Anthropic's SSE event sequence.",
    extra={**json_body(anthropic_request.MessagesRequest, required=True), **_CHAT_EXTRA})
ANTHROPIC_COUNT_TOKENS = route_doc(
    {"content": json_content(anthropic_schemas.CountTokensReply)},
    {status: text for status, text in _ANTHROPIC_ERRORS.items() if status in (400, 404, 409, 413)}, anthropic=True,
    description="The request's input tokens as Ghost would send it.",
    extra=json_body(anthropic_request.CountTokensRequest, required=True))
SESSIONS = route_doc({"content": json_content(s.SessionList)}, {})
_SESSION_PATH = {"parameters": [{"name": "session_id", "in": "path", "required": True,
                                 "schema": {"type": "string", "pattern": session_id.SESSION_ID_PATTERN}}]}
SESSION = route_doc({"content": json_content(s.Session)},
                    {404: "No history is stored for this session.", 422: "Not a valid session id."},
                    extra=_SESSION_PATH)
DISK_FULL = "The disk holding Ghost's home is full."
SESSION_DELETE = route_doc({"content": json_content(s.SessionDeleted)},
                           {404: "No history is stored for this session.", 422: "Not a valid session id.",
                            507: DISK_FULL},
                           extra=_SESSION_PATH)
SAVE = route_doc(
    {"content": binary_content("application/zip"), "headers": {"Content-Disposition": {
        "description": "`attachment; filename=workspace_<UTC timestamp>.zip`", "schema": {"type": "string"}}}},
    {400: BAD_JSON, 409: "A workspace load held the workspace past the wait.",
     413: "The body, or the archive, is larger than its limit.", 422: BAD_FIELD, 507: DISK_FULL},
    description="The workspace as a zip: `session.json`, `sandbox/**`, `acquired_skills/**`.",
    extra={**json_body(s.SaveRequest, required=False), "parameters": [SESSION_HEADER]}, raw=True)
_ZIP_FILE = {"type": "object", "required": ["file"], "additionalProperties": False,
             "properties": {"file": {"type": "string", "format": "binary"}}}
LOAD = route_doc(
    {"content": json_content(s.WorkspaceLoaded)},
    {400: "Not a usable zip: malformed, unsafe names, links or special files.", 409: "Agent turns kept "
     "running past the wait.", 413: "The upload, or the unpacked archive, is larger than its limit.",
     422: "Not a valid session id (X-Ghost-Session).", 507: DISK_FULL},
    description="The workspace was replaced (acquired skills kept, the archive's new ones added).",
    extra={"parameters": [SESSION_HEADER], "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": _ZIP_FILE},
        **binary_content("application/zip"), **binary_content("application/octet-stream")}}})
UPLOAD = route_doc(
    {"content": json_content(s.Uploaded)},
    {400: "Not multipart, no `file` part or no filename, or an unsafe or blocked path.",
     404: "The folder leads outside the sandbox (through a link).", 409: "A workspace load held the "
     "workspace past the wait.", 413: "The file is larger than the upload limit.", 507: DISK_FULL},
    extra={
        "parameters": [{"name": "path", "in": "query", "required": False, "schema": {"type": "string"},
                        "description": "Folder in the sandbox (the form field `path` wins)."}],
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file"], "additionalProperties": False,
            "properties": {"file": {"type": "string", "format": "binary"},
                           "path": {"type": "string", "description": "Folder in the sandbox."}}}}}}})
# Range errors are answered by Starlette's FileResponse itself, in plain text.
_RANGE_TEXT = {"text/plain": {"schema": {"type": "string"}}}
DOWNLOAD = route_doc(
    {"content": binary_content("*/*"), "headers": {"Content-Disposition": {
        "description": "`attachment; filename=...`", "schema": {"type": "string"}}}},
    {404: "No such file in the sandbox (or it leads outside)."},
    description="The file (its type guessed from its name); ranges are served (206).",
    more={206: {"description": "The requested range(s).", "content": binary_content("*/*")},
          400: {"description": "The name is a folder (error shape), or the Range header is malformed "
                "(plain text).", "content": {**json_content(s.ErrorResponse), **_RANGE_TEXT}},
          416: {"description": "The range lies outside the file (plain text).", "content": _RANGE_TEXT}},
    extra={"parameters": [{"name": "Range", "in": "header", "required": False, "schema": {"type": "string"},
                           "description": "`bytes=<start>-<end>`, one range or several."}]},
    raw=True)
PROXY = {
    "response_class": Response,
    "responses": {
        "default": {"description": "The upstream's reply, relayed as it came (any status, any body)."},
        401: error("Missing or wrong Ghost key (Ghost's own answer; never forwarded)."),
        405: error("The path is one of Ghost's own with another method (`Allow` lists its methods)."),
        413: error("The body is larger than the proxy limit."),
        502: error("The upstream is unreachable or broke off."),
        503: error(MODEL_FAILED),
        504: error("The upstream took longer than the read timeout."),
    },
    "openapi_extra": {"requestBody": {"required": False, "content": {"*/*": {"schema": {}}}}},
}


# --- the document -------------------------------------------------------------------------------------------


def _keyed(route_context: Any) -> bool:
    def calls(dependant: Any) -> Iterator[Any]:
        for sub in dependant.dependencies:
            yield sub.call
            yield from calls(sub)

    return require_key in set(calls(route_context.dependant))


def _operations(app: FastAPI, doc: dict[str, Any]) -> Iterator[tuple[bool, str, str, dict[str, Any]]]:
    """(needs the key, path, method, operation) for every documented route and method."""
    for context in routing.iter_route_contexts(app.routes):
        if not isinstance(context.original_route, routing.APIRoute) or not context.include_in_schema:
            continue
        for method in context.methods or ():
            operation = doc["paths"].get(context.path_format, {}).get(method.lower())
            if operation is not None:
                yield _keyed(context), context.path_format, method.lower(), operation


def _finish_operation(keyed: bool, path: str, method: str, operation: dict[str, Any]) -> None:
    operation["security"] = KEYED if keyed else []
    shape = {"ollama": shape_for(path) is Shape.OLLAMA, "anthropic": shape_for(path) is Shape.ANTHROPIC}
    if "HTTPValidationError" in str(operation["responses"].get("422")):
        # FastAPI's own entry for its parameter checks; Ghost's handler answers those in its own shape.
        operation["responses"]["422"] = error("A parameter is invalid.", **shape)
    if keyed:
        operation["responses"].setdefault("401", error("Missing or wrong key.", **shape))
    operation["responses"].setdefault("403", error(FORBIDDEN, **shape))
    for response in operation["responses"].values():
        response.setdefault("headers", {}).update(REQUEST_ID_HEADER)
    if "parameters" in operation:  # one given in `openapi_extra` replaces FastAPI's of that name
        operation["parameters"] = list({(p["in"], p["name"]): p for p in operation["parameters"]}.values())
    if operation["operationId"].startswith("proxy_"):  # one route, many methods: one id each
        operation["operationId"] = f"proxy_{method}"
    if method in ("get", "head", "delete", "options"):  # the proxy's one route documents every method
        operation.pop("requestBody", None)


def _add_components(doc: dict[str, Any]) -> None:
    _, top = models_json_schema([(model, "validation") for model in _MODELS.values()], ref_template=REF)
    components = doc.setdefault("components", {})
    components.setdefault("schemas", {}).update(top.get("$defs", {}))
    for unused in ("HTTPValidationError", "ValidationError"):  # replaced in every operation
        components["schemas"].pop(unused, None)
    components["securitySchemes"] = SECURITY_SCHEMES


def openapi_document(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        with warnings.catch_warnings():
            # The proxy is one route with many methods; its operation ids are made unique below.
            warnings.filterwarnings("ignore", message="Duplicate Operation ID proxy")
            doc = get_openapi(title=app.title, version=app.version, description=app.description,
                              routes=app.routes)
        for keyed, path, method, operation in _operations(app, doc):
            _finish_operation(keyed, path, method, operation)
        _add_components(doc)
        app.openapi_schema = doc
    return app.openapi_schema


def install(app: FastAPI) -> None:
    """Serve the finished document at /openapi.json (and to /docs)."""
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]


# --- users ----------------------------------------------------------------------------------------

NOT_ADMIN = "The key is not an admin's (`permission_error`), or the Host/Origin check failed."
USER_NAME = "Not a valid user name."
_USER_PATH = {"parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]}


def status_doc(status: int, ok: dict[str, Any], errors: dict[int, str], *,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Keyword arguments for a route answering `status` (201, 204) on success."""
    responses: dict[int | str, dict[str, Any]] = {status: {"description": "Success", **ok}}
    responses.update({code: error(text) for code, text in errors.items()})
    return {"status_code": status, "response_model": None, "responses": responses, "openapi_extra": extra or {}}


USER_CREATE = status_doc(201, {"content": json_content(s.UserCreated)},
                         {400: BAD_JSON, 403: NOT_ADMIN, 409: "A user of that name exists.", 413: TOO_LARGE,
                          422: USER_NAME + " Or not a valid role.", 507: DISK_FULL},
                         extra=json_body(s.NewUser, required=True))
USER_LIST = route_doc({"content": json_content(s.UserList)}, {403: NOT_ADMIN, 507: DISK_FULL})
USER_DELETE = status_doc(204, {}, {403: NOT_ADMIN, 404: "No such user.", 409: "The built-in admin.",
                                   422: USER_NAME + " Or `purge` is not a boolean.", 507: DISK_FULL},
                         extra=_USER_PATH)
KEY_CREATE = status_doc(201, {"content": json_content(s.KeyCreated)},
                        {403: NOT_ADMIN, 404: "No such user.", 409: "The built-in admin (its key is the server's).",
                         422: USER_NAME, 507: DISK_FULL}, extra=_USER_PATH)
KEY_DELETE = status_doc(204, {}, {403: NOT_ADMIN, 404: "No such user or key.", 422: USER_NAME, 507: DISK_FULL})
USER_LIMITS = route_doc({"content": json_content(s.UserLimitsSet)},
                        {400: BAD_JSON, 403: NOT_ADMIN, 404: "No such user.", 413: TOO_LARGE,
                         422: USER_NAME + " Or a limit that is not a whole number >= 0 (or null).", 507: DISK_FULL},
                        extra={**_USER_PATH, **json_body(s.UserLimits, required=True)})
