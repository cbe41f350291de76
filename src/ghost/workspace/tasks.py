"""Running the workspace's blocking steps in threads, with cancellation handled on purpose.

Two kinds of step: those that may stop half-way (building or unpacking an archive: they poll a
stop flag and give up), and those that must never be abandoned half-way (swapping the workspace
in, cleaning up): those run to the end even if the request that started them is cancelled.
Both run on the sandbox file layer's own bounded pool (`ghost.sandbox.fspool.run`), not the event
loop's default one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ghost.sandbox import fspool

T = TypeVar("T")


class Stopped(Exception):
    """Raised inside a worker thread when its caller has gone away."""


class StopFlag:
    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def check(self) -> None:
        if self._event.is_set():
            raise Stopped("the request was cancelled")


async def stoppable(fn: Callable[[StopFlag], T]) -> T:
    """Run `fn(stop)` in a thread; if this coroutine is cancelled, tell the thread to stop."""
    stop = StopFlag()
    try:
        return await fspool.run(fn, stop)
    except asyncio.CancelledError:
        stop.set()
        raise


async def to_completion(work: Awaitable[T]) -> T:
    """Await `work` to its end even if the caller is cancelled meanwhile (then re-raise the cancel).

    For steps that must not be left half-done, like the rename sequence of a load and its undo.
    """
    task = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result


async def in_thread_to_completion(fn: Callable[..., T], *args: object) -> T:
    return await to_completion(fspool.run(fn, *args))
