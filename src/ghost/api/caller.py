"""Who is asking, and whose workspace the request acts on: one resolution per request.

The key names its holder (`api/auth.py` checks it): the server's own key is the built-in admin's,
any other is looked up by its hash. A key of role `frontend` may name an end user in one of the
`--user-headers` (Open WebUI's `X-OpenWebUI-User-Id`): the request then acts on that user's
workspace (created on first sight, role `user`), and `--session-headers` (its chat id) names the
session. From any other key those headers are ignored: a user's key never reaches another's
workspace, whatever it sends.

The acting user's name goes into `request.scope["ghost.user"]` (the access log, metrics).
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request as HTTPConnection

from ghost.agent.service import ChatService
from ghost.agent.spaces import Space
from ghost.api.services import services_of, settings_of
from ghost.api.session_id import optional_session_id
from ghost.errors import Forbidden, Unprocessable
from ghost.store.db import ADMIN
from ghost.store.users import User, valid_name
from ghost.workspace.service import Workspace

ADMIN_USER = User(ADMIN, "admin")
SCOPE_KEY = "ghost.caller"
USER_SCOPE_KEY = "ghost.user"


@dataclass(frozen=True)
class Caller:
    key_user: User  # who holds the key: what it may do (admin routes, acting for others)
    user: User  # whose workspace the request acts on
    session: str | None = None  # the session a front end names for its end user


async def acting_for(request: HTTPConnection, key_user: User) -> Caller:
    """The caller, once its key is known to belong to `key_user`."""
    if key_user.role != "frontend":
        return Caller(key_user, key_user)
    settings = settings_of(request)
    named = _one_header(request, settings.user_header_list())
    if named is None:
        return Caller(key_user, key_user)
    name = valid_name(named)
    user = await services_of(request).users.ensure(name)
    if user.role != "user":
        raise Forbidden(f"a front end acts only for users of role 'user'; '{name}' is {user.role}")
    session = optional_session_id(_one_header(request, settings.session_header_list()))
    return Caller(key_user, user, session)


def _one_header(request: HTTPConnection, names: list[str]) -> str | None:
    """The value of the first of `names` the request carries; 422 if it carries it twice."""
    for name in names:
        values = request.headers.getlist(name)
        if len(values) > 1:
            raise Unprocessable(f"the {name} header is sent more than once")
        if values:
            return values[0]
    return None


def remember(request: HTTPConnection, caller: Caller) -> Caller:
    request.scope[SCOPE_KEY] = caller
    request.scope[USER_SCOPE_KEY] = caller.user.name
    return caller


def known_caller(request: HTTPConnection) -> Caller:
    """The caller `require_key` resolved for this request."""
    caller = request.scope.get(SCOPE_KEY)
    if caller is None:  # a route without the key check asked for a workspace: a wiring bug
        raise RuntimeError("the caller is resolved by require_key; this route does not check the key")
    return caller


async def get_caller(request: HTTPConnection) -> Caller:
    return known_caller(request)


async def space_of(request: HTTPConnection) -> Space:
    return await services_of(request).spaces.get(known_caller(request).user)


async def get_space(request: HTTPConnection) -> Space:
    return await space_of(request)


async def get_workspace(request: HTTPConnection) -> Workspace:
    return (await space_of(request)).workspace


async def get_chat(request: HTTPConnection) -> ChatService:
    return (await space_of(request)).chat
