"""Noticing a client that hangs up, while Ghost is busy with something else on its behalf.

An ASGI server reports a hang-up only as an `http.disconnect` message from `receive()`, and only
to whoever asks; a route that is waiting on the upstream or a tool is not asking. These helpers
ask in the background and cancel the work when the message comes, so the work's `finally` blocks
(closing upstream requests, killing sandbox processes) run at once instead of at the next write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import anyio
from starlette.types import Receive

T = TypeVar("T")


async def disconnected(receive: Receive) -> None:
    """Return once the client has hung up (messages before that, e.g. body chunks, are dropped)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope, *,
                               after: asyncio.Event | None = None) -> None:
    """Cancel `scope` when the client hangs up; with `after`, start listening only once it is set
    (until then someone else is reading the request body from `receive`)."""
    if after is not None:
        await after.wait()
    await disconnected(receive)
    scope.cancel()


async def unless_disconnected(receive: Receive, work: Awaitable[T], *,
                              after: asyncio.Event | None = None) -> T | None:
    """`work`'s result; None if the client hung up first, in which case `work` was cancelled."""
    # A cancel scope, not a task of its own for `work`: a hang-up that races the result must not
    # leave a pending cancellation behind to hit the caller later.
    with anyio.CancelScope() as scope:
        watcher = asyncio.ensure_future(cancel_on_disconnect(receive, scope, after=after))
        try:
            return await work
        finally:
            watcher.cancel()
    return None
