"""Ghost's database: one small interface (`Database`), SQLite and PostgreSQL behind it, numbered migrations.

Every store module (history, scratchpad, summaries, users, responses) is written once, as plain
synchronous functions of a connection (`Conn`: `execute`, `executemany`) in SQL both engines speak,
with `?` placeholders. `Database.run(fn, *args)` runs `fn(conn, *args)` inside one transaction, off
the event loop.

SQLite (the default, `SqliteDatabase`): one connection on one dedicated thread. That gives one
writer path (no "database is locked" between Ghost's own writers), keeps sqlite off the event loop,
and lets callers write plain synchronous functions of a `sqlite3.Connection`. WAL mode lets other
processes (a second Ghost reading, the `sqlite3` shell) read meanwhile.

PostgreSQL (`ghost.store.postgres`, `--database-url postgresql://...`): a bounded pool, for
several Ghost replicas sharing one store (docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import errno
import json
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar

from ghost.errors import InsufficientStorage
from ghost.store.conversation import conversation_digest, opening_digest, prefix_digests
from ghost.private import create_private_file, tighten_file

SQLITE_FULL = 13
P = ParamSpec("P")
T = TypeVar("T")
SQLITE = "sqlite"
POSTGRESQL = "postgresql"


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    """What a store function may use of its connection: a `sqlite3.Connection` is one as it is."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...
    def executemany(self, sql: str, rows: Any, /) -> Any: ...


def dialect_of(conn: Conn) -> str:
    """"sqlite" or "postgresql": for the few statements the two engines spell differently."""
    return SQLITE if isinstance(conn, sqlite3.Connection) else getattr(conn, "dialect", SQLITE)


def write_lock(conn: Conn, name: str) -> None:
    """Serialise this transaction with every other that takes the same `name`, until it ends.

    For a check-then-write (a bound on entries, a name taken). SQLite's BEGIN IMMEDIATE already
    lets one writer in at a time; PostgreSQL's READ COMMITTED does not, so there a transaction-
    scoped advisory lock on the name's hash does it (a collision only serialises two unrelated
    writes a little).
    """
    if dialect_of(conn) == POSTGRESQL:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (name,))


def byte_length(conn: Conn, column: str) -> str:
    """SQL for the length in bytes (UTF-8) of a text column."""
    return f"length(CAST({column} AS BLOB))" if dialect_of(conn) == SQLITE else f"octet_length({column})"


# (executescript would COMMIT the migration's transaction half-way, so statements run one by one.)
def _m001_initial(conn: sqlite3.Connection) -> None:
    conn.execute("""
        CREATE TABLE scratchpad (
            key        TEXT PRIMARY KEY,
            value      TEXT NOT NULL,          -- JSON
            updated_at REAL NOT NULL
        )""")
    conn.execute("""
        CREATE TABLE history (
            session_id TEXT PRIMARY KEY,
            messages   TEXT NOT NULL,          -- JSON list of chat messages
            updated_at REAL NOT NULL
        )""")


def _m002_context_summaries(conn: sqlite3.Connection) -> None:
    # Summaries of a conversation's earliest messages, by the hash of the messages they cover, and
    # the one each session uses now (see ghost.agent.context).
    conn.execute("""
        CREATE TABLE context_summaries (
            prefix_hash TEXT PRIMARY KEY,      -- hash chain of the covered messages
            covers      INTEGER NOT NULL,      -- how many messages it covers
            text        TEXT NOT NULL,
            created_at  REAL NOT NULL
        )""")
    conn.execute("""
        CREATE TABLE session_summaries (
            session_id  TEXT PRIMARY KEY,
            prefix_hash TEXT NOT NULL,
            covers      INTEGER NOT NULL,
            text        TEXT NOT NULL,
            updated_at  REAL NOT NULL
        )""")



def _m003_history_digests(conn: sqlite3.Connection) -> None:
    # Which stored conversation a request continues (ghost.store.conversation).
    conn.execute("ALTER TABLE history ADD COLUMN digest TEXT")
    conn.execute("ALTER TABLE history ADD COLUMN opening TEXT")
    conn.execute("CREATE INDEX history_digest ON history (digest)")
    for session_id, messages in conn.execute("SELECT session_id, messages FROM history").fetchall():
        stored = json.loads(messages)
        conn.execute("UPDATE history SET digest = ?, opening = ? WHERE session_id = ?",
                     (conversation_digest(stored), opening_digest(stored), session_id))


ADMIN = "admin"  # the built-in user: today's key, today's workspace


def _m004_users(conn: sqlite3.Connection) -> None:
    # Several people on one Ghost (docs/users.md): users, their keys (hashes only), and a
    # `workspace` column on every table of workspace state. Rows that exist belong to the built-in
    # admin, so an existing home keeps all it had. SQLite cannot change a primary key in place:
    # each table is rebuilt with the workspace in its key and the rows copied over.
    conn.execute("""
        CREATE TABLE users (
            name       TEXT PRIMARY KEY,
            role       TEXT NOT NULL CHECK (role IN ('admin', 'user', 'frontend')),
            created_at REAL NOT NULL,
            turns      INTEGER NOT NULL DEFAULT 0,
            limits     TEXT NOT NULL DEFAULT '{}'  -- JSON: per-user overrides of the limit settings
        )""")
    conn.execute("""
        CREATE TABLE api_keys (
            key_hash   TEXT PRIMARY KEY,           -- SHA-256 of the key (keys are 32 random bytes)
            key_id     TEXT NOT NULL UNIQUE,       -- public: the key's prefix, for listing and deleting
            user_name  TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
            created_at REAL NOT NULL
        )""")
    conn.execute("CREATE INDEX api_keys_user ON api_keys (user_name)")
    conn.execute("INSERT INTO users (name, role, created_at) VALUES (?, 'admin', ?)", (ADMIN, time.time()))
    tables = {
        "scratchpad": ("key TEXT NOT NULL, value TEXT NOT NULL, updated_at REAL NOT NULL", "key"),
        "history": ("session_id TEXT NOT NULL, messages TEXT NOT NULL, updated_at REAL NOT NULL, "
                    "digest TEXT, opening TEXT", "session_id"),
        "context_summaries": ("prefix_hash TEXT NOT NULL, covers INTEGER NOT NULL, text TEXT NOT NULL, "
                              "created_at REAL NOT NULL", "prefix_hash"),
        "session_summaries": ("session_id TEXT NOT NULL, prefix_hash TEXT NOT NULL, covers INTEGER NOT NULL, "
                              "text TEXT NOT NULL, updated_at REAL NOT NULL", "session_id"),
    }
    for table, (columns, key) in tables.items():
        names = [c.split()[0] for c in columns.split(", ")]
        conn.execute(f"ALTER TABLE {table} RENAME TO {table}_old")
        if dialect_of(conn) == POSTGRESQL:  # a primary key's index is named after its table there
            conn.execute(f"ALTER TABLE {table}_old RENAME CONSTRAINT {table}_pkey TO {table}_old_pkey")
        conn.execute(f"CREATE TABLE {table} (workspace TEXT NOT NULL, {columns}, PRIMARY KEY (workspace, {key}))")
        conn.execute(f"INSERT INTO {table} (workspace, {', '.join(names)}) "
                     f"SELECT ?, {', '.join(names)} FROM {table}_old", (ADMIN,))
        conn.execute(f"DROP TABLE {table}_old")
    conn.execute("DROP INDEX IF EXISTS history_digest")
    conn.execute("CREATE INDEX history_digest ON history (workspace, digest)")
    conn.execute("CREATE INDEX history_updated ON history (workspace, updated_at)")
    conn.execute("CREATE INDEX context_summaries_created ON context_summaries (workspace, created_at)")


def _m005_responses(conn: sqlite3.Connection) -> None:
    # Stored OpenAI Responses API responses (ghost.store.responses): the response object as it was
    # sent, and the conversation up to its end, which `previous_response_id` continues.
    conn.execute("""
        CREATE TABLE responses (
            id          TEXT PRIMARY KEY,
            workspace   TEXT NOT NULL,         -- the caller's workspace; no other may read it
            session_id  TEXT,                  -- the Ghost session the turn was stored under
            body        TEXT NOT NULL,         -- JSON: the response object
            messages    TEXT NOT NULL,         -- JSON: the conversation, OpenAI-shaped, this response included
            created_at  REAL NOT NULL
        )""")
    conn.execute("CREATE INDEX responses_workspace ON responses (workspace, created_at)")


def _m006_turn_starts(conn: Conn) -> None:
    # When each user's recent turns started, for the per-user turns-per-minute limit when replicas
    # share the store (ghost.store.turn_limits); one Ghost alone counts in memory.
    conn.execute("CREATE TABLE turn_starts (user_name TEXT NOT NULL, started_at REAL NOT NULL)")
    conn.execute("CREATE INDEX turn_starts_user ON turn_starts (user_name, started_at)")


def _m007_history_messages(conn: Conn) -> None:
    # History stored append-only (ghost.store.history): a row per message, so a turn writes what
    # it adds instead of the whole conversation again. `history` keeps one head row per session:
    # its length, digests, and `writes` (a turn's write after another's began keeps both replies).
    conn.execute("""
        CREATE TABLE history_messages (
            workspace  TEXT NOT NULL,
            session_id TEXT NOT NULL,
            position   INTEGER NOT NULL,       -- 0 for the conversation's first message
            message    TEXT NOT NULL,          -- JSON: one chat message
            digest     TEXT NOT NULL,          -- the chain digest of the conversation up to this message
            written    INTEGER NOT NULL,       -- the session's `writes` by the write that stored it
            PRIMARY KEY (workspace, session_id, position)
        )""")
    conn.execute("ALTER TABLE history ADD COLUMN length INTEGER NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE history ADD COLUMN writes INTEGER NOT NULL DEFAULT 0")
    for ws, session_id, messages in conn.execute("SELECT workspace, session_id, messages FROM history").fetchall():
        stored = json.loads(messages)
        digests = prefix_digests(stored)
        conn.executemany(
            "INSERT INTO history_messages (workspace, session_id, position, message, digest, written) "
            "VALUES (?, ?, ?, ?, ?, 1)",
            [(ws, session_id, i, json.dumps(m, ensure_ascii=False), d) for i, (m, d) in enumerate(zip(stored, digests))])
        conn.execute("UPDATE history SET length = ?, writes = 1, digest = ? WHERE workspace = ? AND session_id = ?",
                     (len(stored), digests[-1] if digests else "", ws, session_id))
    conn.execute("ALTER TABLE history DROP COLUMN messages")


# Append only; never edit a released migration. Index + 1 is the schema version it produces.
MIGRATIONS: list[Callable[[Any], None]] = [_m001_initial, _m002_context_summaries,
                                                         _m003_history_digests, _m004_users,
                                                         _m005_responses, _m006_turn_starts,
                                                         _m007_history_messages]


class Database(ABC):
    """The store's one way in: `await db.run(fn, *args)` runs `fn(conn, *args)` in one transaction."""

    dialect: str

    @abstractmethod
    async def open(self) -> "Database":
        """Connect and bring the schema up to date (MIGRATIONS)."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run `fn(conn, *args)` off the event loop inside one transaction (rolled back if it raises)."""

    async def ping(self) -> None:
        """Raise if the store cannot answer a trivial query now (readiness probes)."""
        await self.run(_ping)

    def lease(self, name: str, *, exclusive: bool, wait_s: float) -> AbstractAsyncContextManager[None]:
        """Workspace `name`'s lease across every process sharing this store (ghost.store.lease).
        SQLite is one machine's file: the in-process gate is all there is to coordinate, so none."""
        return nullcontext()

    def turn_slot(self, user: str, limit: int) -> AbstractAsyncContextManager[bool]:
        """One of `user`'s `limit` turn slots across processes (yields False if none is free).
        Only a store shared by replicas has them: one Ghost alone counts its turns in memory."""
        raise NotImplementedError("turn slots live in a shared store (PostgreSQL)")


def _ping(conn: Conn) -> None:
    conn.execute("SELECT 1").fetchone()


class SqliteDatabase(Database):
    dialect = SQLITE

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ghost-db")
        self._conn: sqlite3.Connection | None = None

    # --- lifecycle -----------------------------------------------------------------------------
    async def open(self) -> "SqliteDatabase":
        await self.run_raw(self._open_sync)
        return self

    async def close(self) -> None:
        await self.run_raw(self._close_sync)
        self._executor.shutdown(wait=True)

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # History and scratchpad are private: the file is 0600 before SQLite opens it, so the
        # -wal and -shm files it creates take that mode too; older, wider ones are tightened.
        create_private_file(self.path)
        for suffix in ("-wal", "-shm", "-journal"):
            tighten_file(self.path.with_name(self.path.name + suffix))
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a crash of Ghost (even SIGKILL) and the database is
        # never corrupted; only a power loss or OS crash may undo the last few commits. FULL
        # would add an fsync to the end of every chat turn.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        self._conn = conn
        migrate(conn)

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- access --------------------------------------------------------------------------------
    async def run_raw(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, *args, **kwargs))

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run `fn(conn, *args)` on the database thread inside one transaction."""
        return await self.run_raw(self._in_transaction, fn, *args)

    def _in_transaction(self, fn: Callable[..., T], *args: object) -> T:
        with transaction(self.connection) as conn:
            return fn(conn, *args)

    @property
    def connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("database is not open")
        return self._conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One transaction; a full disk becomes InsufficientStorage (507), with nothing left open.

    COMMIT is inside the guard: on a full disk it is the COMMIT that fails (the WAL cannot grow),
    and a transaction left open then would make every later BEGIN fail too. SQLite may already
    have rolled back by itself, so ROLLBACK is sent only while a transaction is still open.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if is_disk_full(exc):
            raise InsufficientStorage("the disk holding Ghost's database is full") from exc
        raise


def is_disk_full(exc: BaseException) -> bool:
    """SQLite's "database or disk is full" (SQLITE_FULL), or the OS saying the same."""
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL or "disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def migrate(conn: sqlite3.Connection) -> None:
    """SQLite's schema version is `PRAGMA user_version` (PostgreSQL's: ghost.store.postgres)."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    for version, step in enumerate(MIGRATIONS[current:], start=current + 1):
        with transaction(conn):
            step(conn)
            conn.execute(f"PRAGMA user_version={version}")
