"""The /mcp route: Ghost's key check in front of the MCP SDK's Streamable HTTP handler
(the server itself: `ghost.mcp.endpoint`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ghost.api.auth import check_key
from ghost.errors import GhostError

PATH = "/mcp"
METHODS = ["GET", "POST", "DELETE"]


class EndpointUnavailable(GhostError):
    status_code = 503
    error_type = "unavailable"


class McpEndpoint:
    """The ASGI app of the /mcp route: the key check, then the SDK's handler."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        check_key(Request(scope))  # AuthenticationFailed: Ghost's error handler answers 401
        services = getattr(scope["app"].state, "services", None)
        if services is None:
            raise EndpointUnavailable("the MCP endpoint is not running")
        await services.mcp.endpoint.handle_request(scope, receive, send)


def route() -> Route:
    return Route(PATH, endpoint=McpEndpoint(), methods=METHODS, include_in_schema=False)
