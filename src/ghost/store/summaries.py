"""Summaries of earlier messages, by the hash of the messages they cover, and each session's own.

The cache is content-addressed: a client that resends the same history gets the same summary back
instead of a new one each turn. It is bounded: past `MAX_ROWS` the oldest summaries go.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ghost.store.db import ADMIN, Conn, Database

MAX_ROWS = 10_000
LOOKUP_CHUNK = 500  # bound variables per query


@dataclass(frozen=True)
class StoredSummary:
    prefix_hash: str
    covers: int
    text: str


def _longest(conn: Conn, ws: str, hashes: list[str]) -> StoredSummary | None:
    best: StoredSummary | None = None
    for start in range(0, len(hashes), LOOKUP_CHUNK):
        chunk = hashes[start:start + LOOKUP_CHUNK]
        rows = conn.execute(f"SELECT prefix_hash, covers, text FROM context_summaries WHERE workspace = ? "
                            f"AND prefix_hash IN ({','.join('?' * len(chunk))})", [ws, *chunk]).fetchall()
        for row in rows:
            if best is None or row[1] > best.covers:
                best = StoredSummary(*row)
    return best


def _put(conn: Conn, ws: str, summary: StoredSummary, session_id: str) -> None:
    now = time.time()
    conn.execute("INSERT INTO context_summaries (workspace, prefix_hash, covers, text, created_at) "
                 "VALUES (?, ?, ?, ?, ?) ON CONFLICT(workspace, prefix_hash) DO UPDATE SET covers = excluded.covers, "
                 "text = excluded.text, created_at = excluded.created_at",
                 (ws, summary.prefix_hash, summary.covers, summary.text, now))
    conn.execute("DELETE FROM context_summaries WHERE workspace = ? AND prefix_hash NOT IN (SELECT prefix_hash FROM "
                 "context_summaries WHERE workspace = ? ORDER BY created_at DESC LIMIT ?)",
                 (ws, ws, MAX_ROWS))
    _use(conn, ws, session_id, summary)


def _use(conn: Conn, ws: str, session_id: str, summary: StoredSummary) -> None:
    conn.execute(
        "INSERT INTO session_summaries (workspace, session_id, prefix_hash, covers, text, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(workspace, session_id) DO UPDATE SET prefix_hash = excluded.prefix_hash, covers = excluded.covers, "
        "text = excluded.text, updated_at = excluded.updated_at",
        (ws, session_id, summary.prefix_hash, summary.covers, summary.text, time.time()))


def session_summary(conn: Conn, ws: str, session_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT covers, text, updated_at FROM session_summaries WHERE workspace = ? AND session_id = ?",
                       (ws, session_id)).fetchone()
    return None if row is None else {"messages": row[0], "text": row[1], "updated_at": row[2]}


def delete_session_summary(conn: Conn, ws: str, session_id: str) -> None:
    conn.execute("DELETE FROM session_summaries WHERE workspace = ? AND session_id = ?", (ws, session_id))


class Summaries:
    def __init__(self, db: Database, workspace: str = ADMIN) -> None:
        self.db = db
        self.workspace = workspace  # every query reads and writes this workspace's rows only

    async def longest(self, hashes: list[str]) -> StoredSummary | None:
        """The stored summary covering the most messages among these prefixes, if any."""
        return await self.db.run(_longest, self.workspace, hashes) if hashes else None

    async def put(self, summary: StoredSummary, session_id: str) -> None:
        await self.db.run(_put, self.workspace, summary, session_id)

    async def use(self, session_id: str, summary: StoredSummary) -> None:
        await self.db.run(_use, self.workspace, session_id, summary)
