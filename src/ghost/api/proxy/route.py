"""Where proxied requests enter: the catch-all FastAPI route and `ProxyFastPath` in front of it.

Both hand the request to `forward`. The route documents the proxy in OpenAPI and turns a wrong
method on one of Ghost's own paths into a 405; the fast path takes requests for paths no Ghost
route serves straight to `forward`, skipping FastAPI's router and dependency solving, which cost
more than the forwarding itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from ghost.api import openapi
from ghost.api.auth import check_key, require_key
from ghost.api.proxy.access import check_proxy_access
from ghost.api.services import services_of, settings_of
from ghost.api.errors import ghost_error_response
from ghost.api.proxy.forward import forward
from ghost.errors import GhostError
from ghost.memo import BoundedMemo

router = APIRouter()

PROXY_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]


def every_route(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route, looking inside included routers (newer FastAPI keeps them as one entry each)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        yield from every_route(included.routes) if included is not None else (route,)


def ghost_route_methods(app: Starlette, scope: Scope) -> set[str]:
    """Methods Ghost's own routes answer on this scope's path; empty if only the proxy serves it."""
    methods: set[str] = set()
    for route in every_route(app.router.routes):
        if getattr(route, "endpoint", None) is proxy:
            continue
        if route.matches(scope)[0] is not Match.NONE:
            methods |= getattr(route, "methods", None) or {"*"}  # a mount answers anything
    return methods


async def _method_not_allowed(request: Request) -> None:
    """A path Ghost serves itself, asked with a method it does not serve: 405, never proxied."""
    allowed = ghost_route_methods(request.app, request.scope)
    if allowed and request.method not in allowed:
        raise HTTPException(405, f"method {request.method} not allowed on {request.url.path}",
                            headers={"Allow": ", ".join(sorted(allowed))})


@router.api_route("/{path:path}", methods=PROXY_METHODS,
                  dependencies=[Depends(_method_not_allowed), Depends(require_key)],
                  summary="Forward any other request to the upstream", **openapi.PROXY)
async def proxy(request: Request) -> Response:
    return await checked_forward(request)


async def checked_forward(request: Request) -> Response:
    """The key (checked once per request: the caller is kept in its scope), then whether its
    holder may reach this path through the proxy, then forward."""
    request.scope["ghost.route"] = "proxy"  # the metrics' route label (ghost.api.observe)
    caller = await check_key(request)
    check_proxy_access(caller, request.url.path, settings_of(request))
    return await forward(request)


class ProxyFastPath:
    """Hand requests for paths no Ghost route serves straight to `forward`.

    Those requests would end at the catch-all route anyway, after FastAPI has tried every other
    route and solved the route's dependencies. The innermost middleware (`ghost.api.route_entry`)
    calls it after the request-id, CORS and body-limit steps, which still apply. A path any other
    route matches, with any method, goes the normal way, so 405s and Ghost's own routes are
    untouched. The decision is remembered per path.
    """

    MAX_REMEMBERED = 4096

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._proxied: BoundedMemo[tuple[Starlette, str, str], bool] = BoundedMemo(_only_proxied, self.MAX_REMEMBERED)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._is_proxied(scope):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await checked_forward(request)
        except GhostError as exc:
            response = ghost_error_response(scope["path"], exc)  # as the error handlers answer (and log 5xx)
        await response(scope, receive, send)

    def _is_proxied(self, scope: Scope) -> bool:
        return self._proxied((scope["app"], scope.get("root_path", ""), scope["path"]))


def _only_proxied(where: tuple[Starlette, str, str]) -> bool:
    """Whether only the catch-all route serves this path (of this app, under this root path)."""
    app, root_path, path = where
    return not ghost_route_methods(app, {"type": "http", "method": "GET", "root_path": root_path, "path": path})
