"""A streaming response that notices a client hang-up at once, even while the body is idle.

Starlette's StreamingResponse only learns of a disconnect when a write fails (ASGI spec 2.4), which
can be minutes away while an agent waits on a tool. Ghost watches `http.disconnect` the whole time,
cancels the body when it arrives and closes the body iterator, so `finally` blocks upstream
(closing upstream requests, killing sandbox processes) run promptly.
"""

from __future__ import annotations

import asyncio
import logging

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ghost.api.disconnect import cancel_on_disconnect

log = logging.getLogger("ghost.streaming")


class WatchedStreamingResponse(StreamingResponse):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The body streams in this task, under a cancel scope the watcher task cancels on a
        # hang-up: one task per response, not a task group of two (whose set-up was ~5 % of an
        # agent turn's CPU on the event loop, docs/benchmarks.md).
        with anyio.CancelScope() as cancel:
            watcher = asyncio.ensure_future(cancel_on_disconnect(receive, cancel))
            try:
                await self.stream_response(send)
            except OSError:
                log.info("client went away while streaming")
            finally:
                watcher.cancel()
                await self._close_body()
        if self.background is not None:
            await self.background()

    async def _close_body(self) -> None:
        aclose = getattr(self.body_iterator, "aclose", None)
        if aclose is not None:
            with anyio.CancelScope(shield=True):
                await aclose()
