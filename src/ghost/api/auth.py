"""The one auth check: X-Ghost-Key, Authorization: Bearer or x-api-key (Anthropic's clients), and whose key it is.

The server's own key (--api-key, $GHOST_API_KEY or the generated key file) is compared in
constant time and belongs to the built-in admin; any other key is looked up by its hash among the
users' keys (`ghost.store.users`), so a removed key stops working on the next request.
"""

from __future__ import annotations

import hmac
import logging

from fastapi import Request

from ghost.api.caller import ADMIN_USER, Caller, acting_for, remember
from ghost.api.services import services_of, settings_of
from ghost.errors import AuthenticationFailed, Forbidden
from ghost.store.users import KEY_PREFIX, User

log = logging.getLogger("ghost.auth")
MAX_KEY_CHARS = 512  # a user key is ~60 characters; longer is not worth hashing


def supplied_keys(request: Request) -> list[str]:
    keys = []
    if (header := request.headers.get("x-ghost-key")) is not None:
        keys.append(header)
    if (header := request.headers.get("x-api-key")) is not None:  # how Anthropic's SDKs send the key
        keys.append(header)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        keys.append(token.strip())
    return keys


def key_matches(supplied: str, expected: str) -> bool:
    # Header values arrive as latin-1 decoded bytes; encoding back gives the bytes the client sent,
    # so a non-ASCII key sent as UTF-8 matches the configured key's UTF-8 bytes.
    return hmac.compare_digest(supplied.encode("latin-1", "replace"), expected.encode("utf-8"))


async def require_key(request: Request) -> None:
    """FastAPI dependency for every authed route: check the key, resolve the caller (kept in the
    request's scope for `ghost.api.caller`'s dependencies)."""
    await check_key(request)


async def check_key(request: Request) -> Caller:
    """The caller, or AuthenticationFailed unless the request carries a valid key (or auth is off)."""
    if (known := request.scope.get("ghost.caller")) is not None:
        return known
    return remember(request, await acting_for(request, await key_holder(request)))


async def key_holder(request: Request) -> User:
    services, settings = services_of(request), settings_of(request)
    if settings.no_auth:
        return ADMIN_USER
    expected = settings.api_key or ""  # resolved at start (create_app); empty only if misbuilt
    keys = supplied_keys(request)
    if not expected:  # an empty key would match an empty header: refuse rather than open up
        raise AuthenticationFailed("no API key is configured on this server")
    # Check every supplied key (no short-circuit) so timing does not reveal which header matched.
    matched = [key_matches(key, expected) for key in keys]
    if any(matched):
        return ADMIN_USER
    for key in keys:
        if key.startswith(KEY_PREFIX) and len(key) <= MAX_KEY_CHARS:
            if (user := await services.users.by_key(key)) is not None:
                return user
    client = request.client.host if request.client else "unknown"
    log.warning("auth failed: %s %s from %s (%s)", request.method, request.url.path, client,
                "no key" if not keys else "wrong key")
    raise AuthenticationFailed(
        "missing API key (send X-Ghost-Key, Authorization: Bearer or x-api-key)" if not keys else "invalid API key"
    )


async def require_admin(request: Request) -> None:
    """FastAPI dependency of the user-management routes: an admin's key, or 403."""
    caller = await check_key(request)
    if caller.key_user.role != "admin":
        raise Forbidden("only an admin's key may manage users")
