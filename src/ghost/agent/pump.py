"""Run an event stream in its own task, so the consumer can send keep-alives while it is idle.

The producer task owns the whole turn (upstream request, tool processes), which keeps every
async context inside one task. Closing the consumer cancels the producer, so the turn's
`finally` blocks (closing the upstream response, killing a sandbox process) run at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio

from ghost.agent.events import Event, Heartbeat

QUEUE_SIZE = 256
CLEANUP_SECONDS = 10.0


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_END = object()


async def _produce(source: AsyncIterator[Event], queue: asyncio.Queue[object]) -> None:
    try:
        async for event in source:
            await queue.put(event)
    except Exception as exc:  # handed to the consumer, which decides how to report it
        await queue.put(_Failed(exc))
    else:
        await queue.put(_END)


async def pumped(source: AsyncIterator[Event], idle_seconds: float) -> AsyncIterator[Event]:
    queue: asyncio.Queue[object] = asyncio.Queue(maxsize=QUEUE_SIZE)
    producer = asyncio.create_task(_produce(source, queue))
    try:
        while True:
            try:
                item = queue.get_nowait()  # fast path: no timer per token
            except asyncio.QueueEmpty:
                try:
                    item = await asyncio.wait_for(queue.get(), idle_seconds)
                except TimeoutError:
                    yield Heartbeat()
                    continue
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        producer.cancel()
        # Wait for the turn's own cleanup (closing the upstream, killing a process) without letting
        # a repeated cancellation of *this* task cut it short: asyncio.wait never cancels what it
        # waits on, and the shield keeps anyio's cancel scope from interrupting the wait.
        with anyio.CancelScope(shield=True):
            await asyncio.wait({producer}, timeout=CLEANUP_SECONDS)
