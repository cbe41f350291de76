"""Run an event stream in its own task, so the consumer can send keep-alives while it is idle.

The producer task owns the whole turn (upstream request, tool processes), which keeps every
async context inside one task. Closing the consumer cancels the producer, so the turn's
`finally` blocks (closing the upstream response, killing a sandbox process) run at once.
Events reach the consumer in batches: whatever has queued up since its last read goes out in one
write, which keeps a fast upstream from costing one socket write per token.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio

from ghost.events import Event, Heartbeat

CAPACITY = 256
CLEANUP_SECONDS = 10.0


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_END = object()


class _Channel:
    """A bounded single-producer, single-consumer queue that hands over everything at once."""

    def __init__(self, capacity: int) -> None:
        self.items: deque[object] = deque()
        self.capacity = capacity
        self.readable = asyncio.Event()
        self.writable = asyncio.Event()

    async def put(self, item: object) -> None:
        while len(self.items) >= self.capacity:
            self.writable.clear()
            await self.writable.wait()
        self.items.append(item)
        self.readable.set()

    async def wait_readable(self) -> None:
        while not self.items:
            self.readable.clear()
            await self.readable.wait()

    def drain(self) -> list[object]:
        items = list(self.items)
        self.items.clear()
        self.writable.set()
        return items


async def _produce(source: AsyncIterator[Event], channel: _Channel) -> None:
    try:
        async for event in source:
            await channel.put(event)
    except Exception as exc:  # handed to the consumer, which decides how to report it
        await channel.put(_Failed(exc))
    else:
        await channel.put(_END)
    finally:
        # Stopped while waiting for room in the channel, the turn is left at a `yield`: closed here,
        # its cleanup (the upstream's response, a sandboxed process) runs within the pump's wait
        # for this task instead of whenever the turn is collected. A finished turn: no-op.
        if (closing := getattr(source, "aclose", None)) is not None:
            await closing()


async def pumped(source: AsyncIterator[Event], idle_seconds: float) -> AsyncIterator[list[Event]]:
    """Batches of the source's events; `[Heartbeat()]` after `idle_seconds` without any."""
    channel = _Channel(CAPACITY)
    producer = asyncio.create_task(_produce(source, channel))
    try:
        while True:
            try:
                async with asyncio.timeout(idle_seconds):  # a timer, not a task per wait
                    await channel.wait_readable()
            except TimeoutError:
                yield [Heartbeat()]
                continue
            batch: list[Event] = []
            for item in channel.drain():
                if item is _END or isinstance(item, _Failed):
                    if batch:
                        yield batch
                    if isinstance(item, _Failed):
                        raise item.error
                    return
                batch.append(item)  # type: ignore[arg-type]
            yield batch
    finally:
        producer.cancel()
        # Wait for the turn's own cleanup (closing the upstream, killing a process) without letting
        # a repeated cancellation of *this* task cut it short: asyncio.wait never cancels what it
        # waits on, and the shield keeps anyio's cancel scope from interrupting the wait.
        with anyio.CancelScope(shield=True):
            await asyncio.wait({producer}, timeout=CLEANUP_SECONDS)
