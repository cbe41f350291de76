"""A bound on concurrent agent turns, with a bounded wait before answering 429."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ghost.errors import Busy


class TurnLimiter:
    def __init__(self, max_turns: int, wait_seconds: float) -> None:
        self._slots = asyncio.Semaphore(max_turns)
        self.wait_seconds = wait_seconds

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        try:
            await asyncio.wait_for(self._slots.acquire(), self.wait_seconds)
        except TimeoutError:
            retry = str(max(1, math.ceil(self.wait_seconds)))
            raise Busy("too many chat turns running; try again shortly", headers={"Retry-After": retry}) from None
        try:
            yield
        finally:
            self._slots.release()
