"""A streaming response that notices a client hang-up at once, even while the body is idle.

Starlette's StreamingResponse only learns of a disconnect when a write fails (ASGI spec 2.4), which
can be minutes away while an agent waits on a tool. Ghost watches `http.disconnect` the whole time,
cancels the body when it arrives and closes the body iterator, so `finally` blocks upstream
(closing upstream requests, killing sandbox processes) run promptly.
"""

from __future__ import annotations

import logging

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ghost.api.disconnect import cancel_on_disconnect

log = logging.getLogger("ghost.streaming")


class WatchedStreamingResponse(StreamingResponse):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._stream_then_stop, send, group.cancel_scope)
                group.start_soon(cancel_on_disconnect, receive, group.cancel_scope)
        except BaseExceptionGroup as failed:
            # Only the streaming task can fail; surface its error so handlers see the real type.
            raise failed.exceptions[0] if len(failed.exceptions) == 1 else failed  # noqa: B904 (keep its own cause)
        finally:
            await self._close_body()
        if self.background is not None:
            await self.background()

    async def _stream_then_stop(self, send: Send, scope: anyio.CancelScope) -> None:
        try:
            await self.stream_response(send)
        except OSError:
            log.info("client went away while streaming")
        scope.cancel()

    async def _close_body(self) -> None:
        aclose = getattr(self.body_iterator, "aclose", None)
        if aclose is not None:
            with anyio.CancelScope(shield=True):
                await aclose()
