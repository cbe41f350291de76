"""Summaries of earlier messages, by the hash of the messages they cover, and each session's own.

The cache is content-addressed: a client that resends the same history gets the same summary back
instead of a new one each turn. It is bounded: past `MAX_ROWS` the oldest summaries go.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from ghost.store.db import Database

MAX_ROWS = 10_000
LOOKUP_CHUNK = 500  # bound variables per query


@dataclass(frozen=True)
class StoredSummary:
    prefix_hash: str
    covers: int
    text: str


def _longest(conn: sqlite3.Connection, hashes: list[str]) -> StoredSummary | None:
    best: StoredSummary | None = None
    for start in range(0, len(hashes), LOOKUP_CHUNK):
        chunk = hashes[start:start + LOOKUP_CHUNK]
        rows = conn.execute(f"SELECT prefix_hash, covers, text FROM context_summaries WHERE prefix_hash IN "
                            f"({','.join('?' * len(chunk))})", chunk).fetchall()
        for row in rows:
            if best is None or row[1] > best.covers:
                best = StoredSummary(*row)
    return best


def _put(conn: sqlite3.Connection, summary: StoredSummary, session_id: str) -> None:
    now = time.time()
    conn.execute("INSERT OR REPLACE INTO context_summaries (prefix_hash, covers, text, created_at) "
                 "VALUES (?, ?, ?, ?)", (summary.prefix_hash, summary.covers, summary.text, now))
    conn.execute("DELETE FROM context_summaries WHERE prefix_hash IN (SELECT prefix_hash FROM "
                 "context_summaries ORDER BY created_at DESC LIMIT -1 OFFSET ?)", (MAX_ROWS,))
    _use(conn, session_id, summary)


def _use(conn: sqlite3.Connection, session_id: str, summary: StoredSummary) -> None:
    conn.execute(
        "INSERT INTO session_summaries (session_id, prefix_hash, covers, text, updated_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT(session_id) DO UPDATE SET prefix_hash = excluded.prefix_hash, covers = excluded.covers, "
        "text = excluded.text, updated_at = excluded.updated_at",
        (session_id, summary.prefix_hash, summary.covers, summary.text, time.time()))


def session_summary(conn: sqlite3.Connection, session_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT covers, text, updated_at FROM session_summaries WHERE session_id = ?",
                       (session_id,)).fetchone()
    return None if row is None else {"messages": row[0], "text": row[1], "updated_at": row[2]}


def delete_session_summary(conn: sqlite3.Connection, session_id: str) -> None:
    conn.execute("DELETE FROM session_summaries WHERE session_id = ?", (session_id,))


class Summaries:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def longest(self, hashes: list[str]) -> StoredSummary | None:
        """The stored summary covering the most messages among these prefixes, if any."""
        return await self.db.run(_longest, hashes) if hashes else None

    async def put(self, summary: StoredSummary, session_id: str) -> None:
        await self.db.run(_put, summary, session_id)

    async def use(self, session_id: str, summary: StoredSummary) -> None:
        await self.db.run(_use, session_id, summary)
