"""Which request targets the proxy forwards, and the upstream URL each becomes.

Kept apart and small because it is a security rule: only an origin-form target (`/path?query`)
is joined onto the upstream's base URL, and the joined URL must still name the upstream's own
scheme, host and port, so no request line can make Ghost talk to another server.
"""

from __future__ import annotations

from starlette.requests import Request
from yarl import URL

from ghost.errors import BadRequest, echo

_FORBIDDEN_TARGET_CHARS = ("#", "\\", " ", "\t", "\r", "\n", "\0")  # never in a valid origin-form target


def is_origin_form(target: str) -> bool:
    """`/path` or `/path?query`: not `*`, not an absolute URI, not `//authority/...`."""
    return target.startswith("/") and not target.startswith("//") and not any(
        ch in target for ch in _FORBIDDEN_TARGET_CHARS)


def upstream_target(request: Request) -> bytes:
    """The path and query exactly as the client sent them."""
    scope = request.scope
    path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    return path + b"?" + query if query else path


def upstream_url(base: str, origin: URL, target: bytes) -> URL:
    """The upstream URL for the client's path and query, percent-encoding untouched.

    `base` is the upstream URL without a trailing slash, `origin` the same parsed. A request line
    such as `GET *@127.0.0.1:9/admin` or `GET //other.host/x` must never reach another server.
    """
    text = target.decode("latin-1")
    if not is_origin_form(text):
        raise BadRequest(f"request target must be a path starting with '/': '{echo(text)}'")
    try:
        url = URL(base + text, encoded=True)
    except ValueError as exc:
        raise BadRequest(f"request target is not a valid path: '{echo(text)}'") from exc
    if (url.scheme, url.host, url.port) != (origin.scheme, origin.host, origin.port):
        raise BadRequest(f"request target leaves the upstream: '{echo(text)}'")
    return url
