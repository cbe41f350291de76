"""POST on the chat routes straight to their handlers, past FastAPI's routing and dependency solving.

An agent turn paid more for finding its route (FastAPI tries ~90 routes in turn) and solving its two
dependencies than for anything else in its request's way in (docs/benchmarks.md, issue 27). For a
chat route the work those steps do is small and fixed: check the key, find the caller's chat
service, call the handler. This module does exactly that, with the same functions, in the same
order, and answers a `GhostError` in its path's shape as the error handlers would.

Which routes take it is derived, not listed: a POST-only route of the route table
(`ghost.api.route_table`) whose FastAPI route asks for nothing but its entry's key check and the
caller's `ChatService` (`Depends(get_chat)`) besides the request itself. Any other route, any other
method on these paths (a 405, HEAD), and a path that only resembles one (a trailing slash) goes
through FastAPI as before; so does everything while dependency overrides are set (tests).
OpenAPI is FastAPI's, from the same routes, unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import Message, Receive, Scope, Send

from ghost.api.auth import require_admin, require_key
from ghost.api.caller import get_chat
from ghost.api.errors import ghost_error_response
from ghost.api.route_table import Auth, RouteTable
from ghost.config import Settings
from ghost.errors import GhostError

KEY_CHECKS: dict[Auth, Callable[[Request], Awaitable[None]]] = {Auth.KEY: require_key, Auth.ADMIN: require_admin}


class StartedSend:
    """`send`, noting whether the response has started (what may still be said after an error)."""

    __slots__ = ("send", "started")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


@dataclass(frozen=True)
class ChatRoute:
    """A chat route as the fast path calls it: the key check, the caller's chat service, the handler."""

    route: APIRoute
    check_key: Callable[[Request], Awaitable[None]]
    request_param: str
    service_param: str

    async def handle(self, request: Request) -> Response:
        await self.check_key(request)  # before the service, as FastAPI solves them: a 401 first
        service = await get_chat(request)
        response: Response = await self.route.endpoint(**{self.request_param: request, self.service_param: service})
        return response


def _chat_route(route: APIRoute, table: RouteTable, settings: Settings) -> ChatRoute | None:
    """`route` as a fast chat route, or None if it asks for more than the fast path gives."""
    spec = table.spec_for(route.path)
    check = KEY_CHECKS.get(spec.auth_under(settings))
    dependant = route.dependant
    if route.methods != {"POST"} or spec.methods != ("POST",) or spec.path != route.path or check is None \
            or not dependant.request_param_name:
        return None
    if any((dependant.path_params, dependant.query_params, dependant.header_params, dependant.cookie_params,
            dependant.body_params)):
        return None
    calls = [(d.call, d.name) for d in dependant.dependencies]
    if len(calls) != 2 or calls[0] != (check, None) or calls[1][0] is not get_chat or not calls[1][1]:
        return None
    return ChatRoute(route, check, dependant.request_param_name, calls[1][1])


def _plainly_included(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """`routes`, opening the included routers that add nothing to their routes (newer FastAPI keeps
    each as one entry): under an include that adds a prefix or a dependency, a route is not what its
    own `dependant` says, so it is left to FastAPI."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is None:
            yield route
            continue
        context = getattr(route, "include_context", None)
        if context is not None and not getattr(context, "prefix", "") and not getattr(context, "dependencies", None):
            yield from _plainly_included(included.routes)


def chat_routes(routes: Iterable[BaseRoute], table: RouteTable, settings: Settings) -> dict[str, ChatRoute]:
    """The fast chat routes among `routes` (the app's), by path."""
    found = {}
    for route in _plainly_included(routes):
        if isinstance(route, APIRoute) and (chat := _chat_route(route, table, settings)) is not None:
            found[route.path] = chat
    return found


class ChatFastPath:
    """Serve POST on the chat routes with their handlers directly (see the module's docstring)."""

    def __init__(self, routes: dict[str, ChatRoute]) -> None:
        self.routes = routes

    def route_for(self, scope: Scope) -> ChatRoute | None:
        if scope["method"] != "POST" or (chat := self.routes.get(scope["path"])) is None:
            return None
        return None if scope["app"].dependency_overrides else chat

    async def serve(self, chat: ChatRoute, scope: Scope, receive: Receive, send: StartedSend) -> None:
        # What FastAPI's router leaves in the scope: the metrics and the access log name the route by it.
        scope["route"], scope["endpoint"], scope["path_params"] = chat.route, chat.route.endpoint, {}
        request = Request(scope, receive, send)
        try:
            response = await chat.handle(request)
        except GhostError as exc:
            response = ghost_error_response(scope["path"], exc)
        try:
            await response(scope, receive, send)
        except GhostError as exc:  # as Starlette's handlers do: a reply if nothing was sent yet
            if send.started:
                raise RuntimeError("Caught handled exception, but response already started.") from exc
            await ghost_error_response(scope["path"], exc)(scope, receive, send)
