"""The PostgreSQL store: psycopg 3 with a bounded connection pool, for replicas sharing one database.

The store modules are written once, as synchronous functions of a connection with `?` placeholders
(ghost.store.db). Here each `run` takes a pooled connection on one of `pool_size` worker threads,
opens a transaction and hands the function a `PgConn`, which speaks psycopg's `%s` placeholders and
PostgreSQL's column types. Keeping the functions synchronous is on purpose: SQLite, the default,
runs them on its own thread without a hop per statement; an async driver would make every store
function a coroutine and cost SQLite that hop.

Connection failures (the server restarting, the network gone) become `StoreUnavailable` (503) for
the request that met them; the pool checks a connection before lending it, so requests after the
database is back succeed without a Ghost restart.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache, partial
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool, PoolTimeout

from ghost.errors import InsufficientStorage, StoreUnavailable
from ghost.store.db import MIGRATIONS, POSTGRESQL, Database
from ghost.store.lease import KEEPALIVE, Leases

T = TypeVar("T")
# pg_advisory_xact_lock key serialising schema migrations of replicas starting at once ("ghost" in ASCII).
MIGRATION_LOCK = 0x67686F7374
_REAL = re.compile(r"\bREAL\b")


@lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """SQLite-flavoured SQL as PostgreSQL reads it: `?` placeholders become `%s` (a literal `%`
    doubled), and in DDL SQLite's 8-byte REAL becomes DOUBLE PRECISION (PostgreSQL's REAL has 4
    bytes, too few for a timestamp). The stores put no `?` inside string literals."""
    sql = sql.replace("%", "%%").replace("?", "%s")
    if sql.lstrip()[:6].upper() in ("CREATE", "ALTER "):
        sql = _REAL.sub("DOUBLE PRECISION", sql)
    return sql


class PgConn:
    """A psycopg connection as a store function sees it (the `Conn` protocol of ghost.store.db)."""

    dialect = POSTGRESQL

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> psycopg.Cursor[Any]:
        return self.raw.execute(translate(sql), parameters)

    def executemany(self, sql: str, rows: Any, /) -> None:
        with self.raw.cursor() as cursor:
            cursor.executemany(translate(sql), list(rows))


def _bootstrap(conn: PgConn) -> None:
    """What PostgreSQL lacks of what the stores use of SQLite: json_array_length of a TEXT column."""
    conn.execute("CREATE OR REPLACE FUNCTION json_array_length(text) RETURNS integer "
                 "LANGUAGE sql IMMUTABLE AS 'SELECT json_array_length($1::json)'")


def migrate(conn: PgConn) -> None:
    """Bring the schema up to date in one transaction; replicas starting at once take turns."""
    with conn.raw.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS ghost_schema (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM ghost_schema").fetchone()
        if row is None:
            _bootstrap(conn)
            conn.execute("INSERT INTO ghost_schema (version) VALUES (0)")
        current = 0 if row is None else row[0]
        for version, step in enumerate(MIGRATIONS[current:], start=current + 1):
            step(conn)
            conn.execute("UPDATE ghost_schema SET version = ?", (version,))


def translate_error(exc: BaseException) -> BaseException:
    """A psycopg or pool failure as the Ghost error a client should see; others unchanged."""
    if isinstance(exc, psycopg.errors.DiskFull):
        return InsufficientStorage("the disk holding Ghost's database is full")
    if isinstance(exc, (psycopg.OperationalError, PoolTimeout)) and not isinstance(exc, psycopg.errors.QueryCanceled):
        return StoreUnavailable("the database is unavailable; try again shortly")
    return exc


class PostgresDatabase(Database):
    dialect = POSTGRESQL

    def __init__(self, url: str, *, pool_size: int = 8, connect_timeout_s: float = 10.0) -> None:
        self.url = url
        self.pool_size = pool_size
        self.connect_timeout_s = connect_timeout_s
        # The pool lends at most pool_size connections; as many threads use them, so a request never
        # holds a thread while it waits for a connection another thread holds.
        self._executor = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="ghost-pg")
        self.pool = ConnectionPool(
            url, min_size=1, max_size=pool_size, open=False, timeout=connect_timeout_s,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(connect_timeout_s)), **KEEPALIVE},
            check=ConnectionPool.check_connection, name="ghost",
            # The pool's reconnection backoff doubles its delay until this runs out; short, so that
            # after a database restart the next request starts a fresh attempt instead of waiting
            # out a long backoff.
            reconnect_timeout=max(connect_timeout_s, 1.0))
        # Lease and slot connections are held for whole turns: a pool of their own, larger.
        self.leases = Leases(url, connect_timeout_s=connect_timeout_s, max_size=max(16, 4 * pool_size))

    def lease(self, name: str, *, exclusive: bool, wait_s: float) -> AbstractAsyncContextManager[None]:
        return self.leases.hold(name, exclusive=exclusive, wait_s=wait_s)

    def turn_slot(self, user: str, limit: int) -> AbstractAsyncContextManager[bool]:
        return self.leases.slot(user, limit)

    async def open(self) -> "PostgresDatabase":
        await self._call(self._open_sync)
        await self.leases.open()
        return self

    def _open_sync(self) -> None:
        self.pool.open(wait=True, timeout=self.connect_timeout_s)
        with self.pool.connection() as conn:
            migrate(PgConn(conn))

    async def close(self) -> None:
        await self.leases.aclose()
        await self._call(self.pool.close)
        self._executor.shutdown(wait=True)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return await self._call(self._in_transaction, fn, *args)

    def _in_transaction(self, fn: Callable[..., T], *args: object) -> T:
        with self.pool.connection() as conn, conn.transaction():
            return fn(PgConn(conn), *args)

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, partial(fn, *args))
        except (psycopg.Error, PoolTimeout) as exc:
            translated = translate_error(exc)
            if translated is exc:
                raise
            raise translated from exc
