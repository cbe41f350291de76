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

from typing import Any

import psycopg
import psycopg.errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ghost.errors import Conflict, StoreUnavailable

SLOT_CLASS = 0x67687375  # a user's turn slots (ghost.store.turn_limits): second key hashtext(user:i)
LEASE_CLASS = 0x67687374  # the first key of Ghost's two-key advisory locks ("ghst"); the second: hashtext(name)
KEEPALIVE = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}


class Leases:
    """Lease and slot connections: a pool of their own (psycopg_pool), apart from the query pool,
    since each is held for the whole of the work it guards. A connection goes back to the pool
    with its locks released (`pg_advisory_unlock_all`), or closed when its state is unknown."""

    def __init__(self, url: str, *, connect_timeout_s: float = 10.0, max_size: int = 32) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.pool = AsyncConnectionPool(
            url, min_size=0, max_size=max_size, open=False, timeout=connect_timeout_s, name="ghost-leases",
            kwargs={"autocommit": True, "connect_timeout": max(1, int(connect_timeout_s)), **KEEPALIVE},
            check=AsyncConnectionPool.check_connection, reconnect_timeout=max(connect_timeout_s, 1.0))
        self._returning: set[asyncio.Task[None]] = set()
        self.held = 0  # leases this process holds now (health, tests)

    async def open(self) -> None:
        await self.pool.open()

    async def aclose(self) -> None:
        if self._returning:
            await asyncio.gather(*self._returning, return_exceptions=True)
        await self.pool.close()

    @asynccontextmanager
    async def hold(self, name: str, *, exclusive: bool, wait_s: float) -> AsyncIterator[None]:
        """Hold workspace `name`'s lease until the block ends; Conflict if not had within `wait_s`."""
        conn = await self._take(name, exclusive, wait_s)
        self.held += 1
        try:
            yield
        finally:
            self.held -= 1
            self._release(conn, clean=True)

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
            self._release(conn, clean=False)
            raise
        try:
            yield index >= 0
        finally:
            self._release(conn, clean=True)

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        try:
            return await self.pool.getconn()
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise StoreUnavailable("the database is unavailable; try again shortly") from exc

    async def _take(self, name: str, exclusive: bool, wait_s: float) -> psycopg.AsyncConnection[Any]:
        conn = await self._connect()
        try:
            await conn.execute(f"SET lock_timeout = {max(1, int(wait_s * 1000))}")
            function = "pg_advisory_lock" if exclusive else "pg_advisory_lock_shared"
            await conn.execute(f"SELECT {function}(%s, hashtext(%s))", (LEASE_CLASS, name))
            return conn
        except psycopg.errors.LockNotAvailable:  # not granted: the connection is as it was
            self._release(conn, clean=True)
            if exclusive:
                raise Conflict(f"the workspace is busy: agent turns still running (here or on another "
                               f"replica) after {wait_s:g}s; try again") from None
            raise Conflict("a workspace load is in progress; try again shortly") from None
        except psycopg.OperationalError as exc:
            self._release(conn, clean=False)
            raise StoreUnavailable("the database is unavailable; try again shortly") from exc
        except BaseException:  # cancelled while waiting: the lock, if granted meanwhile, goes with the connection
            self._release(conn, clean=False)
            raise

    def _release(self, conn: psycopg.AsyncConnection[Any], *, clean: bool) -> None:
        """Give the connection back with its locks released (`clean`), or closed: a wait that was
        cancelled or failed may still be granted on the server. Scheduled, not awaited: leaving
        never waits, so a cancelled request cannot skip it."""
        task = asyncio.get_running_loop().create_task(self._return(conn, clean))
        self._returning.add(task)
        task.add_done_callback(self._returning.discard)

    async def _return(self, conn: psycopg.AsyncConnection[Any], clean: bool) -> None:
        try:
            if clean:
                await conn.execute("SELECT pg_advisory_unlock_all()")
            else:
                await conn.close()
        except Exception:  # a connection the server dropped: its locks went with it
            await _close(conn)
        finally:
            await self.pool.putconn(conn)  # a closed one is discarded by the pool


async def _close(conn: psycopg.AsyncConnection[Any]) -> None:
    try:
        await conn.close()
    except Exception:  # a connection the server already dropped: its locks are gone with it
        pass
