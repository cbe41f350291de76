"""The one place a failure to talk to the upstream becomes Ghost's error, with its message.

Ghost reaches the upstream through two HTTP clients: aiohttp for chat completions and the catch-all
proxy (one session, `ghost.llm.transport`: cheaper per request on those paths), httpx for
embeddings, model discovery, token counts and health. Both fail the same few ways,
and a client must read the same error type for the same failure whichever path it took:

- the upstream cannot be reached, or the connection broke: 502 `upstream_unavailable`;
- it was too slow (connecting, answering, taking the body): 504 `upstream_timeout`;
- anything else on the wire: 502 `upstream_error`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
import httpx

from ghost.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable

_HTTPX_BROKEN = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


def from_httpx(exc: httpx.TransportError, what: str = "upstream") -> UpstreamError:
    """The Ghost error for an httpx transport failure talking to the upstream."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"{what} timed out ({type(exc).__name__})")
    if isinstance(exc, httpx.ConnectError):
        return UpstreamUnavailable(f"{what} unreachable: {detail}")
    if isinstance(exc, _HTTPX_BROKEN):  # it was reached, then the connection broke (as aiohttp says it)
        return UpstreamUnavailable(f"{what} connection lost: {detail}")
    return UpstreamError(f"{what} failed: {detail}")


@contextmanager
def upstream_errors(what: str = "upstream") -> Iterator[None]:
    """Translate httpx transport failures inside the block into UpstreamError subclasses."""
    try:
        yield
    except httpx.TransportError as exc:
        raise from_httpx(exc, what) from exc


def from_aiohttp(exc: BaseException, *, connect_timeout: float, read_timeout: float) -> UpstreamError:
    """The Ghost error for an aiohttp (or socket) failure talking to the upstream.

    A bare `TimeoutError` is the proxy's own write deadline (aiohttp has none): the upstream
    stopped taking a streamed request body for `read_timeout` seconds.
    """
    if type(exc) is TimeoutError:
        return UpstreamTimeout(f"upstream stopped taking the request body for {read_timeout:g}s")
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamTimeout(f"no upstream connection within {connect_timeout:g}s "
                               "(unreachable in time, or all --upstream-max-connections busy)")
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(f"upstream read timed out after {read_timeout:g}s")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamUnavailable(f"upstream unreachable: {exc.os_error.strerror or exc.os_error}")
    return UpstreamUnavailable(f"upstream connection lost: {exc}")
