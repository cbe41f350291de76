"""The workspace's database side: scratchpad and chat history, read and written in one transaction.

Each function takes a connection (`ghost.store.db.Conn`) and runs inside one `Database.run` call, so a save
sees one consistent snapshot and a load replaces both tables' content at once or not at all.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from ghost.errors import ArchiveRejected
from ghost.store.db import Conn
from ghost.store.history import messages_of, replace as replace_history
from ghost.workspace.layout import ARCHIVE_FORMAT, ARCHIVE_VERSION


@dataclass(frozen=True)
class SessionState:
    chat_history: list[dict[str, Any]]
    scratchpad: dict[str, Any]


def snapshot(conn: Conn, ws: str, session_id: str, with_history: bool) -> SessionState:
    """Workspace `ws`'s scratchpad, and the session's stored history when `with_history` (else [])."""
    rows = conn.execute("SELECT key, value FROM scratchpad WHERE workspace = ? ORDER BY key", (ws,)).fetchall()
    history: list[dict[str, Any]] = []
    if with_history:
        history = messages_of(conn, ws, session_id) or []
    return SessionState(chat_history=history, scratchpad={key: json.loads(value) for key, value in rows})


def restore(conn: Conn, ws: str, session_id: str, state: SessionState) -> None:
    """Replace workspace `ws`'s whole scratchpad and the session's history with `state`."""
    now = time.time()
    conn.execute("DELETE FROM scratchpad WHERE workspace = ?", (ws,))
    conn.executemany(
        "INSERT INTO scratchpad (workspace, key, value, updated_at) VALUES (?, ?, ?, ?)",
        [(ws, key, json.dumps(value), now) for key, value in state.scratchpad.items()],
    )
    replace_history(conn, ws, session_id, state.chat_history, now)


def encode_session(state: SessionState, session_id: str, saved_at: str) -> bytes:
    """The archive's session.json."""
    document = {
        "format": ARCHIVE_FORMAT,
        "version": ARCHIVE_VERSION,
        "session_id": session_id,
        "saved_at": saved_at,
        "chat_history": state.chat_history,
        "scratchpad": state.scratchpad,
    }
    return json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8")


def decode_session(raw: bytes) -> SessionState:
    """Parse and check an archive's session.json; ArchiveRejected if it is not one."""
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArchiveRejected(f"session.json is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # a document nested thousands of levels deep
        raise ArchiveRejected("session.json is nested too deeply") from exc
    if not isinstance(document, dict):
        raise ArchiveRejected("session.json must hold a JSON object")
    history = document.get("chat_history", [])
    scratchpad = document.get("scratchpad", {})
    if not isinstance(history, list) or not all(isinstance(m, dict) for m in history):
        raise ArchiveRejected("session.json: chat_history must be a list of message objects")
    if not isinstance(scratchpad, dict):
        raise ArchiveRejected("session.json: scratchpad must be an object")
    return SessionState(chat_history=history, scratchpad=scratchpad)
