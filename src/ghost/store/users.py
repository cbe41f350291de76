"""Users and their API keys (docs/users.md): the one place user names and keys are checked and kept.

Keys are 32 random bytes, shown once and stored only as their SHA-256: a fast hash is right for
random keys (nothing to guess), and the lookup is one primary-key probe whatever the number of
users. Each key starts with a short public id (`ghost_<key_id>_...`) so it can be listed and
deleted without being known.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from ghost.errors import Conflict, InsufficientStorage, NotFound, Unprocessable, echo
from ghost.store.db import ADMIN, Conn, Database, write_lock

Role = Literal["admin", "user", "frontend"]
ROLES: tuple[str, ...] = ("admin", "user", "frontend")
NAME_PATTERN = r"[A-Za-z0-9_@-][A-Za-z0-9._@-]{0,127}"
NAME_RULE = "1-128 characters of letters, digits and . _ @ -, not starting with '.'"
_NAME = re.compile(NAME_PATTERN)
KEY_PREFIX = "ghost_"
log = logging.getLogger("ghost.users")
# Turn counts are written this long after the first turn not yet written, with every turn counted
# meanwhile: one write for many turns. A crash loses at most this much of the counts.
TURN_COUNTS_WRITE_S = 1.0
LIMIT_NAMES = ("max_concurrent_turns", "turns_per_minute", "sandbox_bytes")


@dataclass(frozen=True)
class User:
    name: str
    role: str
    limits: dict[str, int] = field(default_factory=dict)  # per-user overrides of the limit settings


def valid_name(value: Any) -> str:
    """A valid user name, or Unprocessable (422). ASCII only: no look-alikes, no path separators."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise Unprocessable(f"user name: {NAME_RULE}")
    return value


def valid_role(value: Any) -> str:
    if value not in ROLES:
        raise Unprocessable(f"role: one of {', '.join(ROLES)}")
    return value


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def new_key() -> tuple[str, str]:
    """(key_id, key): a fresh random key and its public id."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


# --- on the database thread ---------------------------------------------------------------------
def _by_key(conn: Conn, digest: str) -> User | None:
    row = conn.execute("SELECT u.name, u.role, u.limits FROM api_keys k JOIN users u ON u.name = k.user_name "
                       "WHERE k.key_hash = ?", (digest,)).fetchone()
    return None if row is None else User(row[0], row[1], json.loads(row[2]))


def _get(conn: Conn, name: str) -> User | None:
    row = conn.execute("SELECT name, role, limits FROM users WHERE name = ?", (name,)).fetchone()
    return None if row is None else User(row[0], row[1], json.loads(row[2]))


def _add_key(conn: Conn, name: str) -> tuple[str, str]:
    key_id, key = new_key()
    conn.execute("INSERT INTO api_keys (key_hash, key_id, user_name, created_at) VALUES (?, ?, ?, ?)",
                 (key_hash(key), key_id, name, time.time()))
    return key_id, key


def _create(conn: Conn, name: str, role: str, with_key: bool) -> tuple[str, str] | None:
    write_lock(conn, f"user:{name}")
    if conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
        raise Conflict(f"user '{name}' already exists")
    conn.execute("INSERT INTO users (name, role, created_at) VALUES (?, ?, ?)", (name, role, time.time()))
    return _add_key(conn, name) if with_key else None


def _ensure(conn: Conn, name: str) -> User:
    """The user `name`, created with role `user` if it is new (a front end's end user)."""
    write_lock(conn, f"user:{name}")
    if (user := _get(conn, name)) is not None:
        return user
    conn.execute("INSERT INTO users (name, role, created_at) VALUES (?, 'user', ?)", (name, time.time()))
    return User(name, "user")


def _key_for(conn: Conn, name: str) -> tuple[str, str]:
    if _get(conn, name) is None:
        raise NotFound(f"user '{name}' not found")
    if name == ADMIN:
        raise Conflict("the built-in admin's key is the server's own (--api-key or the key file)")
    return _add_key(conn, name)


def _delete_key(conn: Conn, name: str, key_id: str) -> bool:
    return conn.execute("DELETE FROM api_keys WHERE user_name = ? AND key_id = ?", (name, key_id)).rowcount > 0


def _delete(conn: Conn, name: str, purge: bool) -> bool:
    if name == ADMIN:
        raise Conflict("the built-in admin cannot be deleted")
    if conn.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
        return False  # (its keys go with it: ON DELETE CASCADE)
    if purge:
        for table in ("scratchpad", "history", "context_summaries", "session_summaries"):
            conn.execute(f"DELETE FROM {table} WHERE workspace = ?", (name,))
        conn.execute("DELETE FROM turn_starts WHERE user_name = ?", (name,))
    return True


def _list(conn: Conn) -> list[dict[str, Any]]:
    keys: dict[str, list[str]] = {}
    for user_name, key_id in conn.execute("SELECT user_name, key_id FROM api_keys ORDER BY created_at"):
        keys.setdefault(user_name, []).append(key_id)
    rows = conn.execute("SELECT name, role, created_at, turns, limits FROM users ORDER BY name").fetchall()
    return [{"name": name, "role": role, "created_at": created, "keys": len(keys.get(name, [])) + (name == ADMIN),
             "key_ids": keys.get(name, []), "turns": turns, "limits": json.loads(limits)}
            for name, role, created, turns, limits in rows]


def _count_turns(conn: Conn, counts: dict[str, int]) -> None:
    conn.executemany("UPDATE users SET turns = turns + ? WHERE name = ?",
                     [(count, name) for name, count in counts.items()])


def _set_limits(conn: Conn, name: str, limits: dict[str, int | None]) -> dict[str, int]:
    user = _get(conn, name)
    if user is None:
        raise NotFound(f"user '{name}' not found")
    merged = {**user.limits, **limits}
    merged = {k: v for k, v in merged.items() if v is not None}
    conn.execute("UPDATE users SET limits = ? WHERE name = ?", (json.dumps(merged), name))
    return merged


class Users:
    """The users table and the keys table, over the one database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # Turns counted and not yet written: a write per turn cost a database round trip and a
        # commit on the way to the turn's first token. Written in the background, the turns that
        # came meanwhile in one statement; everything that reads or removes a count writes them
        # first (the database's one thread runs an earlier background write before that read).
        self._pending: Counter[str] = Counter()
        self._writer: asyncio.Task[None] | None = None

    async def by_key(self, key: str) -> User | None:
        return await self.db.run(_by_key, key_hash(key))

    async def get(self, name: str) -> User | None:
        await self.flush()
        return await self.db.run(_get, valid_name(name))

    async def create(self, name: str, role: str = "user") -> tuple[str, str]:
        """Create the user with one key: (key_id, key). Conflict if the name is taken."""
        created = await self.db.run(_create, valid_name(name), valid_role(role), True)
        assert created is not None
        return created

    async def ensure(self, name: str) -> User:
        return await self.db.run(_ensure, valid_name(name))

    async def add_key(self, name: str) -> tuple[str, str]:
        return await self.db.run(_key_for, valid_name(name))

    async def delete_key(self, name: str, key_id: str) -> bool:
        return await self.db.run(_delete_key, valid_name(name), key_id)

    async def delete(self, name: str, purge: bool = False) -> bool:
        await self.flush()  # a name made again must not inherit its predecessor's pending turns
        return await self.db.run(_delete, valid_name(name), purge)

    async def list(self) -> list[dict[str, Any]]:
        await self.flush()
        return await self.db.run(_list)

    async def count_turn(self, name: str) -> None:
        """Count one admitted turn of `name` (written within `TURN_COUNTS_WRITE_S`, not waited for)."""
        self._pending[name] += 1
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_later())

    async def flush(self) -> None:
        """Write every turn counted so far (reads call it first)."""
        await self._write_pending()

    async def aclose(self) -> None:
        """At shutdown, before the database closes: the last turns' counts written."""
        if self._writer is not None:
            self._writer.cancel()
        await self._write_pending()

    async def _write_later(self) -> None:
        await asyncio.sleep(TURN_COUNTS_WRITE_S)
        await self._write_pending()

    async def _write_pending(self) -> None:
        while self._pending:
            counts, self._pending = dict(self._pending), Counter()
            try:
                # Shielded: shutdown cancels the writer, never a write already handed over.
                await asyncio.shield(self.db.run(_count_turns, counts))
            except InsufficientStorage:  # a counter is not worth failing anything for
                log.warning("a full disk lost %d turns from the users' turn counts", sum(counts.values()))
            except Exception:  # noqa: BLE001 - a background write: logged, never left unretrieved
                log.exception("could not write the users' turn counts")

    async def set_limits(self, name: str, limits: dict[str, int | None]) -> dict[str, int]:
        for key, value in limits.items():
            if key not in LIMIT_NAMES or not (value is None or (type(value) is int and value >= 0)):
                raise Unprocessable(f"limits: {echo(str(key))} is not one of {', '.join(LIMIT_NAMES)} "
                                    "with a whole number >= 0 (or null for the default)")
        return await self.db.run(_set_limits, valid_name(name), limits)
