"""The scratchpad: the agent's persistent key-value working memory, values being any JSON.

Stored in the `scratchpad` table, so it survives restarts. Bounded: at most `max_entries`
keys, each value at most `max_value_bytes` of JSON, each key at most MAX_KEY_CHARS characters;
a write past a bound fails with LimitExceeded and changes nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from ghost.errors import BadRequest, LimitExceeded, NotFound
from ghost.store.db import ADMIN, Conn, Database, byte_length, write_lock

MAX_KEY_CHARS = 200


@dataclass(frozen=True)
class Entry:
    key: str
    size: int  # bytes of JSON
    updated_at: float


def encode(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"scratchpad values must be JSON: {exc}") from exc


def check_key(key: Any) -> str:
    if not isinstance(key, str) or not key.strip():
        raise BadRequest("a scratchpad key must be a non-empty string")
    if len(key) > MAX_KEY_CHARS:
        raise BadRequest(f"a scratchpad key may have at most {MAX_KEY_CHARS} characters")
    return key


class Scratchpad:
    def __init__(self, db: Database, *, max_entries: int, max_value_bytes: int, workspace: str = ADMIN) -> None:
        self.db = db
        self.workspace = workspace  # every query reads and writes this workspace's rows only
        self.max_entries = max_entries
        self.max_value_bytes = max_value_bytes
        # The system prompt shows the previews every turn, and they change only when the
        # scratchpad is written: kept here, forgotten on every write (`changed`).
        self._previews: dict[tuple[int, int], tuple[int, list[tuple[str, str]]]] = {}
        self._generation = 0  # counts writes, so a read that raced one is not kept

    async def set(self, key: str, value: Any) -> None:
        data = self._checked(key, value)
        try:
            await self.db.run(self._set, key, data)
        finally:
            self.changed()

    async def get(self, key: str) -> Any:
        row = await self.db.run(_get, self.workspace, check_key(key))
        if row is None:
            raise NotFound(f"no scratchpad entry {key!r}")
        return json.loads(row)

    async def list(self) -> list[Entry]:
        return await self.db.run(_list, self.workspace)

    async def delete(self, key: str) -> bool:
        try:
            return await self.db.run(_delete, self.workspace, check_key(key))
        finally:
            self.changed()

    async def previews(self, chars: int, limit: int) -> tuple[int, list[tuple[str, str]]]:
        """(number of entries, [(key, first `chars` characters of its JSON)]) newest first."""
        if (known := self._previews.get((chars, limit))) is not None:
            return known[0], list(known[1])
        generation = self._generation
        total, rows = await self.db.run(_previews, self.workspace, chars, limit)
        if generation == self._generation:  # no write finished meanwhile: what was read is current
            self._previews[(chars, limit)] = (total, rows)
        return total, list(rows)

    def changed(self) -> None:
        """Forget the previews: the scratchpad was written (by a tool, or a workspace load)."""
        self._generation += 1
        self._previews.clear()

    def checked_entries(self, entries: dict[str, Any]) -> dict[str, str]:
        """`entries` as stored JSON, if all of them fit this scratchpad's limits (else 413/400).

        A workspace load calls this before it changes anything: an archive's scratchpad gets no
        more room than the tools give.
        """
        if len(entries) > self.max_entries:
            raise LimitExceeded(f"{len(entries)} scratchpad entries; at most {self.max_entries} are kept")
        return {key: self._checked(key, value) for key, value in entries.items()}

    def _checked(self, key: str, value: Any) -> str:
        check_key(key)
        data = encode(value)
        if len(data.encode()) > self.max_value_bytes:
            raise LimitExceeded(f"scratchpad value for {key!r} is {len(data.encode()):,} bytes of JSON; "
                                f"at most {self.max_value_bytes:,} are allowed")
        return data

    def _set(self, conn: Conn, key: str, data: str) -> None:
        ws = self.workspace
        write_lock(conn, f"scratchpad:{ws}")
        exists = conn.execute("SELECT 1 FROM scratchpad WHERE workspace = ? AND key = ?", (ws, key)).fetchone()
        if not exists and conn.execute("SELECT COUNT(*) FROM scratchpad WHERE workspace = ?",
                                       (ws,)).fetchone()[0] >= self.max_entries:
            raise LimitExceeded(f"the scratchpad is full ({self.max_entries} entries); delete one first")
        conn.execute(
            "INSERT INTO scratchpad (workspace, key, value, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(workspace, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            (ws, key, data, time.time()))


def _get(conn: Conn, ws: str, key: str) -> str | None:
    row = conn.execute("SELECT value FROM scratchpad WHERE workspace = ? AND key = ?", (ws, key)).fetchone()
    return None if row is None else row[0]


def _list(conn: Conn, ws: str) -> list[Entry]:
    rows = conn.execute(f"SELECT key, {byte_length(conn, 'value')}, updated_at FROM scratchpad WHERE workspace = ? "
                        "ORDER BY key", (ws,))
    return [Entry(key, size, updated) for key, size, updated in rows.fetchall()]


def _delete(conn: Conn, ws: str, key: str) -> bool:
    return conn.execute("DELETE FROM scratchpad WHERE workspace = ? AND key = ?", (ws, key)).rowcount > 0


def _previews(conn: Conn, ws: str, chars: int, limit: int) -> tuple[int, list[tuple[str, str]]]:
    total = conn.execute("SELECT COUNT(*) FROM scratchpad WHERE workspace = ?", (ws,)).fetchone()[0]
    rows = conn.execute("SELECT key, substr(value, 1, ?) FROM scratchpad WHERE workspace = ? "
                        "ORDER BY updated_at DESC, key LIMIT ?", (chars, ws, limit)).fetchall()
    return total, [(key, start) for key, start in rows]
