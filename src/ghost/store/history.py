"""Chat history per session: the client's messages of the latest turn plus Ghost's reply."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from ghost.store.db import Database
from ghost.store.summaries import delete_session_summary, session_summary


def _save(conn: sqlite3.Connection, session_id: str, messages: list[dict[str, Any]]) -> None:
    conn.execute(
        "INSERT INTO history (session_id, messages, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT(session_id) DO UPDATE SET messages = excluded.messages, updated_at = excluded.updated_at",
        (session_id, json.dumps(messages, ensure_ascii=False), time.time()),
    )


def _get(conn: sqlite3.Connection, session_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT messages, updated_at FROM history WHERE session_id = ?", (session_id,)).fetchone()
    if row is None:
        return None
    # `summary`: what the model sees in place of the session's earliest messages (null: nothing folded).
    return {"id": session_id, "messages": json.loads(row[0]), "updated_at": row[1],
            "summary": session_summary(conn, session_id)}


def _list(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT session_id, json_array_length(messages), updated_at FROM history ORDER BY updated_at DESC"
    ).fetchall()
    return [{"id": sid, "messages": count, "updated_at": updated} for sid, count, updated in rows]


def _delete(conn: sqlite3.Connection, session_id: str) -> bool:
    delete_session_summary(conn, session_id)
    return conn.execute("DELETE FROM history WHERE session_id = ?", (session_id,)).rowcount > 0


class History:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def save(self, session_id: str, messages: list[dict[str, Any]]) -> None:
        await self.db.run(_save, session_id, messages)

    async def get(self, session_id: str) -> dict[str, Any] | None:
        return await self.db.run(_get, session_id)

    async def list(self) -> list[dict[str, Any]]:
        return await self.db.run(_list)

    async def delete(self, session_id: str) -> bool:
        return await self.db.run(_delete, session_id)
