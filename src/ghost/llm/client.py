"""The shared upstream HTTP client and the one place httpx errors become Ghost errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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
    # The upstream is a server we are configured to trust; never follow env proxies to reach it.
    return httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False)


@contextmanager
def upstream_errors(what: str = "upstream") -> Iterator[None]:
    """Translate transport failures talking to the upstream into UpstreamError subclasses."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout(f"{what} timed out ({type(exc).__name__})") from exc
    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        raise UpstreamUnavailable(f"{what} unreachable: {exc or type(exc).__name__}") from exc
    except httpx.TransportError as exc:
        raise UpstreamError(f"{what} failed: {exc or type(exc).__name__}") from exc
