"""Per-workspace leases across replicas: PostgreSQL advisory locks held by a connection of their own.

A workspace's agent turns (and saves, uploads, tool calls from /mcp) hold its lease shared; a load
holds it exclusively, so a load on one replica waits for turns running on every other and keeps new
ones out while it swaps the shared folder. PostgreSQL queues a shared request behind a waiting
exclusive one, so a stream of turns cannot starve a load (the same precedence as the in-process
gate). The lock lives in the session of the connection that took it: when a replica dies, its
connections drop and PostgreSQL frees its leases; TCP keepalives bound how long a vanished
machine's connection can linger.

Waits are bounded by `lock_timeout`: past it the caller gets Conflict (409), as on one machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
import psycopg.errors

from ghost.errors import Conflict, StoreUnavailable

SLOT_CLASS = 0x67687375  # a user's turn slots (ghost.store.turn_limits): second key hashtext(user:i)
LEASE_CLASS = 0x67687374  # the first key of Ghost's two-key advisory locks ("ghst"); the second: hashtext(name)
KEEPALIVE = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}


class Leases:
    def __init__(self, url: str, *, connect_timeout_s: float = 10.0) -> None:
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self._closing: set[asyncio.Task[None]] = set()
        self.held = 0  # leases this process holds now (health, tests)

    @asynccontextmanager
    async def hold(self, name: str, *, exclusive: bool, wait_s: float) -> AsyncIterator[None]:
        """Hold workspace `name`'s lease until the block ends; Conflict if not had within `wait_s`."""
        conn = await self._take(name, exclusive, wait_s)
        self.held += 1
        try:
            yield
        finally:
            self.held -= 1
            self._release(conn)

    @asynccontextmanager
    async def slot(self, user: str, limit: int) -> AsyncIterator[bool]:
        """Hold one of `user`'s `limit` turn slots for the block: yields False (nothing held) when
        all are taken, here or on other replicas."""
        conn = await self._connect()
        try:
            for index in range(limit):
                row = await (await conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))",
                                                (SLOT_CLASS, f"{user}:{index}"))).fetchone()
                if row is not None and row[0]:
                    break
            else:
                index = -1
        except BaseException:
            self._release(conn)
            raise
        try:
            yield index >= 0
        finally:
            self._release(conn)

    async def _connect(self) -> psycopg.AsyncConnection[object]:
        try:
            return await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=max(1, int(self.connect_timeout_s)), **KEEPALIVE)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable("the database is unavailable; try again shortly") from exc

    async def _take(self, name: str, exclusive: bool, wait_s: float) -> psycopg.AsyncConnection[object]:
        conn = await self._connect()
        try:
            await conn.execute(f"SET lock_timeout = {max(1, int(wait_s * 1000))}")
            function = "pg_advisory_lock" if exclusive else "pg_advisory_lock_shared"
            await conn.execute(f"SELECT {function}(%s, hashtext(%s))", (LEASE_CLASS, name))
            return conn
        except psycopg.errors.LockNotAvailable:
            self._release(conn)
            if exclusive:
                raise Conflict(f"the workspace is busy: agent turns still running (here or on another "
                               f"replica) after {wait_s:g}s; try again") from None
            raise Conflict("a workspace load is in progress; try again shortly") from None
        except psycopg.OperationalError as exc:
            self._release(conn)
            raise StoreUnavailable("the database is unavailable; try again shortly") from exc
        except BaseException:  # cancelled while waiting: the lock, if granted meanwhile, goes with the connection
            self._release(conn)
            raise

    def _release(self, conn: psycopg.AsyncConnection[object]) -> None:
        """Closing the session frees its locks. Scheduled, not awaited: leaving never waits, so a
        cancelled request cannot skip it."""
        task = asyncio.get_running_loop().create_task(_close(conn))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


async def _close(conn: psycopg.AsyncConnection[object]) -> None:
    try:
        await conn.close()
    except Exception:  # a connection the server already dropped: its locks are gone with it
        pass
