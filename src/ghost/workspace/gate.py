"""A readers/writer gate over the workspace: many agent turns at once, or one load alone.

Agent turns (and saves, and the final step of an upload) are readers: they run side by side.
A workspace load is the writer: it swaps the sandbox, scratchpad and history, so it waits for the
running readers to finish and keeps new ones out while it swaps. A waiting writer takes
precedence, so a stream of turns cannot starve a load. Both waits are bounded and end in
`Conflict` (409) rather than hanging a request.

State changes are plain synchronous assignments (asyncio runs one coroutine at a time), so leaving
the gate never awaits and cannot be lost to a cancellation. Readers are not re-entrant while a
writer waits: a turn that enters the gate again would wait for the writer, which waits for it —
the bounded wait turns that into a 409 instead of a deadlock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ghost.errors import Conflict

DEFAULT_WAIT_S = 30.0


class WorkspaceGate:
    def __init__(self, wait_s: float = DEFAULT_WAIT_S) -> None:
        self.wait_s = wait_s
        self._readers = 0
        self._writer = False
        self._no_writer = asyncio.Event()
        self._no_writer.set()
        self._no_readers = asyncio.Event()
        self._no_readers.set()
        self._load_waiting = False

    @property
    def readers(self) -> int:
        """How many turns (or saves, uploads) hold the gate now."""
        return self._readers

    @property
    def exclusive_held(self) -> bool:
        """True while a load holds the gate or waits for it."""
        return self._writer

    @property
    def load_waiting(self) -> bool:
        """True while a load has claimed the gate and waits for running turns to end."""
        return self._load_waiting

    @asynccontextmanager
    async def turn(self, timeout: float | None = None) -> AsyncIterator[None]:
        """Hold the workspace shared. Waits (bounded) while a load holds it; then `Conflict`."""
        await self._enter_shared(self.wait_s if timeout is None else timeout)
        try:
            yield
        finally:
            self._leave_shared()

    @asynccontextmanager
    async def exclusive(self, timeout: float | None = None) -> AsyncIterator[None]:
        """Hold the workspace alone. New turns wait from now on; running ones get `timeout` seconds."""
        await self._enter_exclusive(self.wait_s if timeout is None else timeout)
        try:
            yield
        finally:
            self._leave_exclusive()

    # --- shared ---------------------------------------------------------------------------------
    async def _enter_shared(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                while self._writer:
                    await self._no_writer.wait()
        except TimeoutError:
            raise Conflict("a workspace load is in progress; try again shortly") from None
        self._readers += 1
        self._no_readers.clear()

    def _leave_shared(self) -> None:
        self._readers -= 1
        if self._readers == 0:
            self._no_readers.set()

    # --- exclusive ------------------------------------------------------------------------------
    async def _enter_exclusive(self, timeout: float) -> None:
        claimed = False
        try:
            async with asyncio.timeout(timeout):
                while self._writer:
                    await self._no_writer.wait()
                self._claim_writer()
                claimed = True
                self._load_waiting = True
                try:
                    await self._no_readers.wait()
                finally:
                    self._load_waiting = False
        except TimeoutError:
            if claimed:
                self._leave_exclusive()
            raise Conflict(
                f"the workspace is busy: agent turns still running after {timeout:g}s; try again"
            ) from None
        except BaseException:
            if claimed:
                self._leave_exclusive()
            raise

    def _claim_writer(self) -> None:
        self._writer = True
        self._no_writer.clear()

    def _leave_exclusive(self) -> None:
        self._writer = False
        self._no_writer.set()
