"""The one auth check: X-Ghost-Key, Authorization: Bearer or x-api-key (Anthropic's clients), compared
in constant time."""

from __future__ import annotations

import hmac
import logging

from fastapi import Request

from ghost.api.services import services_of
from ghost.errors import AuthenticationFailed

log = logging.getLogger("ghost.auth")


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
    """FastAPI dependency for every authed route.

    Async on purpose: FastAPI runs a plain `def` dependency in its thread pool, a thread hand-off
    on every request for a check that takes microseconds.
    """
    check_key(request)


def check_key(request: Request) -> None:
    """Raise AuthenticationFailed unless the request carries the key (or auth is off)."""
    settings = services_of(request).settings
    if settings.no_auth:
        return
    expected = settings.api_key or ""  # resolved at start (create_app); empty only if misbuilt
    keys = supplied_keys(request)
    if not expected:  # an empty key would match an empty header: refuse rather than open up
        raise AuthenticationFailed("no API key is configured on this server")
    # Check every supplied key (no short-circuit) so timing does not reveal which header matched.
    matched = [key_matches(key, expected) for key in keys]
    if any(matched):
        return
    client = request.client.host if request.client else "unknown"
    log.warning("auth failed: %s %s from %s (%s)", request.method, request.url.path, client,
                "no key" if not keys else "wrong key")
    raise AuthenticationFailed(
        "missing API key (send X-Ghost-Key, Authorization: Bearer or x-api-key)" if not keys else "invalid API key"
    )
