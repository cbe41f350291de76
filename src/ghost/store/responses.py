"""Stored Responses API responses, one workspace's at a time.

A row keeps the response object as it was sent (for `GET /v1/responses/{id}`) and the
conversation up to its end, OpenAI-shaped, which a later request's `previous_response_id`
continues. Every read and delete is scoped to the store's workspace: another workspace's id
is simply not there.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from ghost.store.db import Conn, Database


@dataclass(frozen=True)
class StoredResponse:
    id: str
    session_id: str | None
    body: dict[str, Any]
    messages: list[dict[str, Any]]


class ResponseStore:
    def __init__(self, db: Database, workspace: str, *, max_stored: int = 1000) -> None:
        self.db = db
        self.workspace = workspace
        self.max_stored = max_stored  # per workspace; saving one more drops the oldest

    async def save(self, response_id: str, session_id: str | None, body: dict[str, Any],
                   messages: list[dict[str, Any]]) -> None:
        await self.db.run(_save, self.workspace, response_id, session_id, _dumps(body), _dumps(messages),
                          self.max_stored)

    async def get(self, response_id: str) -> StoredResponse | None:
        row = await self.db.run(_get, self.workspace, response_id)
        if row is None:
            return None
        session_id, body, messages = row
        return StoredResponse(response_id, session_id, json.loads(body), json.loads(messages))

    async def delete(self, response_id: str) -> bool:
        return await self.db.run(_delete, self.workspace, response_id)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _save(conn: Conn, workspace: str, response_id: str, session_id: str | None, body: str,
          messages: str, max_stored: int) -> None:
    conn.execute("INSERT INTO responses (id, workspace, session_id, body, messages, created_at) "
                 "VALUES (?, ?, ?, ?, ?, ?)", (response_id, workspace, session_id, body, messages, time.time()))
    conn.execute("DELETE FROM responses WHERE workspace = ? AND id NOT IN (SELECT id FROM responses "
                 "WHERE workspace = ? ORDER BY created_at DESC, id DESC LIMIT ?)",
                 (workspace, workspace, max_stored))


def _get(conn: Conn, workspace: str, response_id: str) -> tuple[str | None, str, str] | None:
    return conn.execute("SELECT session_id, body, messages FROM responses WHERE id = ? AND workspace = ?",
                        (response_id, workspace)).fetchone()


def _delete(conn: Conn, workspace: str, response_id: str) -> bool:
    return conn.execute("DELETE FROM responses WHERE id = ? AND workspace = ?",
                        (response_id, workspace)).rowcount > 0
