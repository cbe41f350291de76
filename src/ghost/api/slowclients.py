"""Bounds on slow or idle clients: a deadline for a request's head, and a cap on connections.

uvicorn closes a kept-alive connection that stays idle (`timeout_keep_alive`), but once a client
has sent its first byte nothing limits how long the rest of the request line and headers may take:
a client sending one header line every few seconds holds its connection forever, and a few
thousand of them hold the server. `HeadDeadlineProtocol` is uvicorn's httptools protocol with a
deadline for a request's head: from the moment a new connection is opened, or from the first byte
of a later request on a kept-alive one, until the headers are complete; past it the connection is
closed.

Between requests a kept-alive connection is idle, and only uvicorn's keep-alive timeout
(`--idle-connection-timeout`) bounds it. That one is longer than clients keep idle connections
(httpx 5 s, aiohttp 15 s): were it shorter or the same, a client reusing a connection just as Ghost
closes it would lose its request (a reset, `ReadError`), and more often the busier the machine,
since the client's idle clock starts only once it has read the response.

`limit_concurrency` caps open connections plus running requests: past it uvicorn answers 503.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ghost.config import Settings

log = logging.getLogger("ghost.server")

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # uvicorn without httptools: h11 only, no head deadline (logged at start)
    HttpToolsProtocol = None  # type: ignore[assignment,misc]


if HttpToolsProtocol is not None:

    class HeadDeadlineProtocol(HttpToolsProtocol):  # type: ignore[misc,valid-type]
        """httptools' protocol, closing connections whose request head is not in within
        `head_timeout` seconds."""

        head_timeout: float = 10.0
        _head_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head_deadline()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._head_deadline is None:  # a later request on a kept-alive connection began
                self._arm_head_deadline()

        def on_headers_complete(self) -> None:
            self._disarm_head_deadline()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_deadline()
            super().connection_lost(exc)

        def _arm_head_deadline(self) -> None:
            self._disarm_head_deadline()
            self._head_deadline = self.loop.call_later(self.head_timeout, self._head_too_slow)

        def _disarm_head_deadline(self) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None

        def _head_too_slow(self) -> None:
            self._head_deadline = None
            if not self.transport.is_closing():
                client = "%s:%d" % self.client if self.client else "a client"
                log.info("closing the connection of %s: no complete request head within %gs "
                         "(--header-timeout)", client, self.head_timeout)
                self.transport.close()


def server_limits(settings: Settings) -> dict[str, Any]:
    """uvicorn.run keyword arguments bounding slow clients and open connections."""
    limits: dict[str, Any] = {"limit_concurrency": settings.max_connections,
                              "timeout_keep_alive": settings.idle_connection_timeout}
    if HttpToolsProtocol is None:
        log.warning("httptools is not installed: --header-timeout cannot be enforced (put a reverse "
                    "proxy in front, see docs/security.md)")
        return limits
    protocol = type("GhostHttpProtocol", (HeadDeadlineProtocol,), {"head_timeout": settings.header_timeout})
    return {**limits, "http": protocol}
