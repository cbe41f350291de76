"""Map every exception to an error reply, written by `ghost.api.error_shape` in its path's shape."""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ghost.api.error_shape import error_response
from ghost.errors import GhostError

log = logging.getLogger("ghost.errors")

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "method_not_allowed",
    409: "conflict_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def ghost_error_response(path: str, exc: GhostError) -> JSONResponse:
    """The reply to a `GhostError` raised while serving `path` (the handler's and the fast paths')."""
    if exc.status_code >= 500:
        log.warning("%s: %s", type(exc).__name__, exc.message)
    return error_response(path, exc.status_code, exc.message, exc.error_type, exc.headers)


async def _ghost_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GhostError)
    return ghost_error_response(request.scope["path"], exc)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    default = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "error"
    message = exc.detail if isinstance(exc.detail, str) else default
    error_type = _TYPE_BY_STATUS.get(status, "http_error")
    return error_response(request.scope["path"], status, message, error_type, getattr(exc, "headers", None))


def _describe_validation(exc: RequestValidationError) -> tuple[int, str]:
    errors = exc.errors()
    if any(err.get("type") == "json_invalid" for err in errors):
        return 400, "request body is not valid JSON"
    parts = []
    for err in errors[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    return 422, "; ".join(parts) or "invalid request"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    status, message = _describe_validation(exc)
    return error_response(request.scope["path"], status, message, _TYPE_BY_STATUS[status])


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    request_id = request.scope.get("ghost.request_id", "")
    log.exception("unhandled error in request %s", request_id)
    response = error_response(request.scope["path"], 500, f"internal error (request {request_id})", "internal_error")
    # ServerErrorMiddleware sits outside the request-id middleware, so set the header here.
    response.headers["x-request-id"] = request_id
    return response


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(GhostError, _ghost_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    # Anything else becomes a 500 in the innermost middleware (`ghost.api.route_entry`), so that it
    # gets the request id, CORS headers and an access-log line like every other response; this
    # handler is only reached by a bug in the middleware outside it.
    app.add_exception_handler(Exception, _unexpected)
