"""The shared upstream HTTP client and the one place httpx errors become Ghost errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

from ghost.config import Settings
from ghost.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable


def make_http_client(settings: Settings) -> httpx.AsyncClient:
    timeout = httpx.Timeout(
        connect=settings.connect_timeout,
        read=settings.read_timeout,
        write=settings.read_timeout,
        pool=settings.connect_timeout,
    )
    limits = httpx.Limits(
        max_connections=settings.upstream_max_connections,
        max_keepalive_connections=settings.upstream_max_connections,
    )
    # The client is shared by every request: a cookie one proxied reply sets must never ride along
    # on another client's request, so the jar accepts none.
    no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    # The upstream is a server we are configured to trust; never follow env proxies to reach it.
    return httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False, cookies=no_cookies)


def translate_upstream_error(exc: httpx.TransportError, what: str = "upstream") -> UpstreamError:
    """The Ghost error for an httpx transport failure talking to the upstream."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"{what} timed out ({type(exc).__name__})")
    if isinstance(exc, (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return UpstreamUnavailable(f"{what} unreachable: {detail}")
    return UpstreamError(f"{what} failed: {detail}")


@contextmanager
def upstream_errors(what: str = "upstream") -> Iterator[None]:
    """Translate transport failures talking to the upstream into UpstreamError subclasses."""
    try:
        yield
    except httpx.TransportError as exc:
        raise translate_upstream_error(exc, what) from exc
