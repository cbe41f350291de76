"""Chat history per session: the client's messages of the latest turn plus Ghost's reply.

Each row also keeps the conversation's digest and the digest of its opening
(`ghost.store.conversation`), so a request can be matched to the conversation it continues.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ghost.store.conversation import conversation_digest, opening_digest
from ghost.store.db import ADMIN, Conn, Database
from ghost.store.summaries import LOOKUP_CHUNK, delete_session_summary, session_summary


def write(conn: Conn, ws: str, session_id: str, messages: list[dict[str, Any]],
          now: float | None = None) -> None:
    """Store `messages` as the session's conversation (the one way a history row is written)."""
    conn.execute(
        "INSERT INTO history (workspace, session_id, messages, updated_at, digest, opening) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(workspace, session_id) DO UPDATE SET messages = excluded.messages, updated_at = excluded.updated_at, "
        "digest = excluded.digest, opening = excluded.opening",
        (ws, session_id, json.dumps(messages, ensure_ascii=False), time.time() if now is None else now,
         conversation_digest(messages), opening_digest(messages)),
    )


def _get(conn: Conn, ws: str, session_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT messages, updated_at FROM history WHERE workspace = ? AND session_id = ?",
                       (ws, session_id)).fetchone()
    if row is None:
        return None
    # `summary`: what the model sees in place of the session's earliest messages (null: nothing folded).
    return {"id": session_id, "messages": json.loads(row[0]), "updated_at": row[1],
            "summary": session_summary(conn, ws, session_id)}


def _opening(conn: Conn, ws: str, session_id: str) -> str | None:
    row = conn.execute("SELECT opening FROM history WHERE workspace = ? AND session_id = ?",
                       (ws, session_id)).fetchone()
    return None if row is None else row[0] or ""


def _continued(conn: Conn, ws: str, digests: list[str]) -> str | None:
    """The session whose conversation is the longest of the prefixes `digests` stand for."""
    rows = []
    for start in range(0, len(digests), LOOKUP_CHUNK):
        chunk = digests[start:start + LOOKUP_CHUNK]
        rows += conn.execute(f"SELECT session_id, digest, updated_at FROM history WHERE workspace = ? "
                             f"AND digest IN ({','.join('?' * len(chunk))})", [ws, *chunk]).fetchall()
    position = {digest: index for index, digest in enumerate(digests)}
    best = max(rows, key=lambda row: (position[row[1]], row[2]), default=None)  # the newest of a tie
    return None if best is None else best[0]


def _latest(conn: Conn, ws: str) -> str | None:
    row = conn.execute("SELECT session_id FROM history WHERE workspace = ? ORDER BY updated_at DESC LIMIT 1",
                       (ws,)).fetchone()
    return None if row is None else row[0]


def _list(conn: Conn, ws: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT session_id, json_array_length(messages), updated_at FROM history WHERE workspace = ? "
        "ORDER BY updated_at DESC", (ws,)).fetchall()
    return [{"id": sid, "messages": count, "updated_at": updated} for sid, count, updated in rows]


def _delete(conn: Conn, ws: str, session_id: str) -> bool:
    delete_session_summary(conn, ws, session_id)
    return conn.execute("DELETE FROM history WHERE workspace = ? AND session_id = ?",
                        (ws, session_id)).rowcount > 0


class History:
    def __init__(self, db: Database, workspace: str = ADMIN) -> None:
        self.db = db
        self.workspace = workspace  # every query reads and writes this workspace's rows only

    async def save(self, session_id: str, messages: list[dict[str, Any]]) -> None:
        await self.db.run(write, self.workspace, session_id, messages)

    async def get(self, session_id: str) -> dict[str, Any] | None:
        return await self.db.run(_get, self.workspace, session_id)

    async def opening(self, session_id: str) -> str | None:
        """The stored conversation's opening digest; None if the session has none stored."""
        return await self.db.run(_opening, self.workspace, session_id)

    async def continued_by(self, digests: list[str]) -> str | None:
        """The session a conversation with these prefix digests continues, if any."""
        return await self.db.run(_continued, self.workspace, digests) if digests else None

    async def latest(self) -> str | None:
        return await self.db.run(_latest, self.workspace)

    async def list(self) -> list[dict[str, Any]]:
        return await self.db.run(_list, self.workspace)

    async def delete(self, session_id: str) -> bool:
        return await self.db.run(_delete, self.workspace, session_id)
