"""A readers/writer gate over the workspace: many agent turns at once, or one load alone.

Agent turns (and saves, and the final step of an upload) are readers: they run side by side.
A workspace load is the writer: it swaps the sandbox, scratchpad and history, so it waits for the
running readers to finish and keeps new ones out while it swaps. A waiting writer takes
precedence, so a stream of turns cannot starve a load. Both waits are bounded and end in
`Conflict` (409) rather than hanging a request.

Across replicas sharing one PostgreSQL store, the gate also holds the workspace's lease there
(`lease`, ghost.store.lease): shared while any turn of this process runs (one connection for all
of them), exclusively for a load. The in-process gate is taken first, so a load here waits for the
turns here before it waits for those elsewhere.

State changes are plain synchronous assignments (asyncio runs one coroutine at a time), so leaving
the gate never awaits and cannot be lost to a cancellation. Readers are not re-entrant while a
writer waits: a turn that enters the gate again would wait for the writer, which waits for it —
the bounded wait turns that into a 409 instead of a deadlock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext

from ghost.errors import Conflict

DEFAULT_WAIT_S = 30.0
# (exclusive, wait_s) -> the lease held for the block; the default: none (one process).
Lease = Callable[[bool, float], AbstractAsyncContextManager[None]]


def _no_lease(exclusive: bool, wait_s: float) -> AbstractAsyncContextManager[None]:
    return nullcontext()


class WorkspaceGate:
    def __init__(self, wait_s: float = DEFAULT_WAIT_S, lease: Lease = _no_lease) -> None:
        self.wait_s = wait_s
        self._lease = lease
        self._shared_lease: AbstractAsyncContextManager[None] | None = None
        self._shared_lease_lock = asyncio.Lock()
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
        wait = self.wait_s if timeout is None else timeout
        await self._enter_shared(wait)
        try:
            await self._hold_shared_lease(wait)
        except BaseException:
            self._leave_shared()
            raise
        try:
            yield
        finally:
            self._leave_shared()

    @asynccontextmanager
    async def exclusive(self, timeout: float | None = None) -> AsyncIterator[None]:
        """Hold the workspace alone. New turns wait from now on; running ones get `timeout` seconds."""
        wait = self.wait_s if timeout is None else timeout
        await self._enter_exclusive(wait)
        try:
            async with self._lease(True, wait):
                yield
        finally:
            self._leave_exclusive()

    # --- the lease across processes (shared: one for all of this process's readers) -------------
    async def _hold_shared_lease(self, wait: float) -> None:
        if self._lease is _no_lease:  # one process (SQLite): nothing to take, not even the lock
            return
        async with self._shared_lease_lock:
            if self._shared_lease is None:
                lease = self._lease(False, wait)
                await lease.__aenter__()
                self._shared_lease = lease

    def _drop_shared_lease(self) -> None:
        lease, self._shared_lease = self._shared_lease, None
        if lease is not None:
            # Leases release without waiting (ghost.store.lease schedules the close), so this
            # coroutine finishes at its first step and leaving the gate never blocks.
            asyncio.get_running_loop().create_task(_exit(lease))

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
            self._drop_shared_lease()
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


async def _exit(lease: AbstractAsyncContextManager[None]) -> None:
    await lease.__aexit__(None, None, None)
