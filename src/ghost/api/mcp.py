"""The /mcp route: Ghost's key check in front of the MCP SDK's Streamable HTTP handler
(the server itself: `ghost.mcp.endpoint`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ghost.api.auth import check_key
from ghost.api.caller import space_of
from ghost.errors import GhostError

PATH = "/mcp"
METHODS = ["GET", "POST", "DELETE"]


class EndpointUnavailable(GhostError):
    status_code = 503
    error_type = "unavailable"


class McpEndpoint:
    """The ASGI app of the /mcp route: the key check, then the SDK's handler of the caller's
    workspace (each user's tools act on that user's sandbox only)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if getattr(scope["app"].state, "services", None) is None:
            raise EndpointUnavailable("the MCP endpoint is not running")
        request = Request(scope)
        await check_key(request)  # AuthenticationFailed: Ghost's error handler answers 401
        space = await space_of(request)
        await space.mcp.endpoint.handle_request(scope, receive, send)


def route() -> Route:
    return Route(PATH, endpoint=McpEndpoint(), methods=METHODS, include_in_schema=False)
