"""Chat history per session, stored append-only: one row per message, one head row per session.

A turn stores only what it adds: the client's new messages and Ghost's reply, after the messages
the session already holds. The head row (`history`) keeps the conversation's length, its digest and
the digest of its opening (`ghost.store.conversation`), so a request can be matched to the
conversation it continues, and `writes`, how many times the session was written.

When a turn's conversation does not extend the stored one (the client regenerated or edited a
turn), what follows the part both share is replaced by the turn's messages — unless another turn
stored messages there while this one ran (two turns of one session at once): then nothing is
removed and this turn's messages go after them, so both replies are kept in the order the turns
finished. A turn knows what it saw by the `writes` it read when it started (`SessionHead`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring as _json_string  # what json.dumps(ensure_ascii=False) quotes with
from typing import Any

from ghost.store.conversation import opening_digest, prefix_digests
from ghost.store.db import ADMIN, Conn, Database, write_lock
from ghost.store.summaries import LOOKUP_CHUNK, delete_session_summary, session_summary


@dataclass(frozen=True)
class SessionHead:
    """What a turn reads of a stored session before it runs."""

    session_id: str
    opening: str  # the opening's digest ("" for a row stored before openings were kept)
    writes: int  # how many times the session was written: a later write is another turn's


def _head(conn: Conn, ws: str, session_id: str) -> tuple[int, str, int] | None:
    return conn.execute("SELECT length, digest, writes FROM history WHERE workspace = ? AND session_id = ?",
                        (ws, session_id)).fetchone()


_INSERT = "INSERT INTO history_messages (workspace, session_id, position, message, digest, written) VALUES "
_ROW = "(?, ?, ?, ?, ?, ?)"
ROWS_PER_INSERT = 100  # 600 bound variables: within SQLite's oldest limit (999) and PostgreSQL's
_INSERT_ONE, _INSERT_MANY = _INSERT + _ROW, _INSERT + ", ".join([_ROW] * ROWS_PER_INSERT)


def _insert_messages(conn: Conn, ws: str, session_id: str, start: int, messages: list[Any],
                     digests: list[str], writes: int) -> None:
    """A new session's conversation goes in ROWS_PER_INSERT rows per statement (SQLite runs one
    statement instead of a hundred: ~20 % less of the write's CPU for 202 rows); the rest (and a
    continuing turn's usual two rows) by one `executemany`, as before. The rows are the same."""
    rows = [(ws, session_id, start + i, _row_text(message), digest, writes)
            for i, (message, digest) in enumerate(zip(messages, digests))]
    whole = len(rows) - len(rows) % ROWS_PER_INSERT
    for at in range(0, whole, ROWS_PER_INSERT):
        conn.execute(_INSERT_MANY, [value for row in rows[at:at + ROWS_PER_INSERT] for value in row])
    if whole < len(rows):
        conn.executemany(_INSERT_ONE, rows[whole:])


def _row_text(message: Any) -> str:
    """`json.dumps(message, ensure_ascii=False)`, character for character; a plain text message (a
    role, then a text `content`: nearly all) without a `json.dumps` call, whose set-up costs several
    times the encoding of a short message — a new session stores hundreds of them at once."""
    if type(message) is dict and len(message) == 2 and next(iter(message)) == "role":
        role, content = message["role"], message.get("content")
        if type(role) is str and type(content) is str:
            return '{"role": ' + _json_string(role) + ', "content": ' + _json_string(content) + "}"
    return json.dumps(message, ensure_ascii=False)


def _set_head(conn: Conn, ws: str, session_id: str, length: int, digest: str, opening: str, writes: int,
              now: float) -> None:
    conn.execute(
        "INSERT INTO history (workspace, session_id, updated_at, digest, opening, length, writes) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(workspace, session_id) DO UPDATE SET "
        "updated_at = excluded.updated_at, digest = excluded.digest, opening = excluded.opening, "
        "length = excluded.length, writes = excluded.writes",
        (ws, session_id, now, digest, opening, length, writes))


def append_turn(conn: Conn, ws: str, session_id: str, conversation: list[dict[str, Any]],
                seen_writes: int | None = None, now: float | None = None, chained: Sequence[str] = ()) -> None:
    """Store a turn's whole `conversation` (the client's messages and the reply), writing only
    what the session does not hold yet. `seen_writes`: the session's `writes` when the turn started
    (None: the caller saw every write, so a differing tail is always replaced); `chained`: the
    chain digests of the conversation's first messages, if the caller has them already."""
    now = time.time() if now is None else now
    digests = [*chained, *prefix_digests(conversation[len(chained):], chained[-1] if chained else "")]
    _lock_session(conn, ws, session_id)
    head = _head(conn, ws, session_id)
    length, stored_digest, writes = head if head is not None else (0, "", 0)
    if length == 0 or (length <= len(conversation) and digests[length - 1] == stored_digest):
        keep = shared = length  # the common case: the conversation extends the stored one
    else:
        stored = conn.execute("SELECT digest, written FROM history_messages WHERE workspace = ? AND "
                              "session_id = ? ORDER BY position", (ws, session_id)).fetchall()
        shared = 0
        while shared < min(len(stored), len(conversation)) and stored[shared][0] == digests[shared]:
            shared += 1
        by_others = seen_writes is not None and any(written > seen_writes for _, written in stored[shared:])
        keep = length if by_others else shared
        if keep < length:
            conn.execute("DELETE FROM history_messages WHERE workspace = ? AND session_id = ? AND position >= ?",
                         (ws, session_id, keep))
    added = conversation[shared:]
    if keep == shared:
        added_digests = digests[shared:]
    else:  # appended after another turn's messages: the chain goes on from the stored end
        added_digests = prefix_digests(added, stored_digest)
    writes += 1
    _insert_messages(conn, ws, session_id, keep, added, added_digests, writes)
    total = keep + len(added)
    final_digest = added_digests[-1] if added_digests else (digests[keep - 1] if keep else "")
    opening = opening_digest(conversation) if keep == shared else _stored_opening(conn, ws, session_id)
    _set_head(conn, ws, session_id, total, final_digest, opening, writes, now)


def replace(conn: Conn, ws: str, session_id: str, messages: list[Any], now: float | None = None) -> None:
    """Make `messages` the session's whole conversation (a loaded workspace archive's history)."""
    _lock_session(conn, ws, session_id)
    head = _head(conn, ws, session_id)
    writes = (head[2] if head is not None else 0) + 1
    conn.execute("DELETE FROM history_messages WHERE workspace = ? AND session_id = ?", (ws, session_id))
    digests = prefix_digests(messages)
    _insert_messages(conn, ws, session_id, 0, messages, digests, writes)
    _set_head(conn, ws, session_id, len(messages), digests[-1] if digests else "", opening_digest(messages),
              writes, time.time() if now is None else now)


def _lock_session(conn: Conn, ws: str, session_id: str) -> None:
    # Two replicas' turns of one session may write at once: each reads the head, then appends at
    # the length it read, so they take turns (SQLite's writers already do).
    write_lock(conn, f"history {ws} {session_id}")  # a collision only makes two writes take turns


def _stored_opening(conn: Conn, ws: str, session_id: str) -> str:
    row = conn.execute("SELECT opening FROM history WHERE workspace = ? AND session_id = ?",
                       (ws, session_id)).fetchone()
    return row[0] or "" if row is not None else ""


def messages_of(conn: Conn, ws: str, session_id: str) -> list[Any] | None:
    """The session's stored conversation, in order; None if it has none."""
    if _head(conn, ws, session_id) is None:
        return None
    rows = conn.execute("SELECT message FROM history_messages WHERE workspace = ? AND session_id = ? "
                        "ORDER BY position", (ws, session_id)).fetchall()
    return json.loads("[" + ",".join(row[0] for row in rows) + "]")  # one parse for the whole list


def _get(conn: Conn, ws: str, session_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT updated_at FROM history WHERE workspace = ? AND session_id = ?",
                       (ws, session_id)).fetchone()
    if row is None:
        return None
    # `summary`: what the model sees in place of the session's earliest messages (null: nothing folded).
    return {"id": session_id, "messages": messages_of(conn, ws, session_id), "updated_at": row[0],
            "summary": session_summary(conn, ws, session_id)}


def _session_head(conn: Conn, ws: str, session_id: str) -> SessionHead | None:
    row = conn.execute("SELECT opening, writes FROM history WHERE workspace = ? AND session_id = ?",
                       (ws, session_id)).fetchone()
    return None if row is None else SessionHead(session_id, row[0] or "", row[1])


def _continued(conn: Conn, ws: str, digests: list[str]) -> SessionHead | None:
    """The session whose conversation is the longest of the prefixes `digests` stand for."""
    rows = []
    for start in range(0, len(digests), LOOKUP_CHUNK):
        chunk = digests[start:start + LOOKUP_CHUNK]
        rows += conn.execute(f"SELECT session_id, digest, updated_at, opening, writes FROM history WHERE "
                             f"workspace = ? AND digest IN ({','.join('?' * len(chunk))})", [ws, *chunk]).fetchall()
    position = {digest: index for index, digest in enumerate(digests)}
    best = max(rows, key=lambda row: (position[row[1]], row[2]), default=None)  # the newest of a tie
    return None if best is None else SessionHead(best[0], best[3] or "", best[4])


def _latest(conn: Conn, ws: str) -> str | None:
    row = conn.execute("SELECT session_id FROM history WHERE workspace = ? ORDER BY updated_at DESC LIMIT 1",
                       (ws,)).fetchone()
    return None if row is None else row[0]


def _list(conn: Conn, ws: str) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT session_id, length, updated_at FROM history WHERE workspace = ? "
                        "ORDER BY updated_at DESC", (ws,)).fetchall()
    return [{"id": sid, "messages": count, "updated_at": updated} for sid, count, updated in rows]


def _delete(conn: Conn, ws: str, session_id: str) -> bool:
    delete_session_summary(conn, ws, session_id)
    conn.execute("DELETE FROM history_messages WHERE workspace = ? AND session_id = ?", (ws, session_id))
    return conn.execute("DELETE FROM history WHERE workspace = ? AND session_id = ?",
                        (ws, session_id)).rowcount > 0


class History:
    def __init__(self, db: Database, workspace: str = ADMIN) -> None:
        self.db = db
        self.workspace = workspace  # every query reads and writes this workspace's rows only

    async def save(self, session_id: str, messages: list[dict[str, Any]], seen_writes: int | None = None,
                   chained: Sequence[str] = ()) -> None:
        """Store a turn's conversation, appending what is new (`append_turn`); `chained`: the chain
        digests of its first messages, when the caller has them (they are not computed again)."""
        await self.db.run(append_turn, self.workspace, session_id, messages, seen_writes, None, chained)

    async def get(self, session_id: str) -> dict[str, Any] | None:
        return await self.db.run(_get, self.workspace, session_id)

    async def head(self, session_id: str) -> SessionHead | None:
        """The stored session's opening digest and write count; None if the session has none stored."""
        return await self.db.run(_session_head, self.workspace, session_id)

    async def continued_by(self, digests: list[str]) -> SessionHead | None:
        """The session a conversation with these prefix digests continues, if any."""
        return await self.db.run(_continued, self.workspace, digests) if digests else None

    async def latest(self) -> str | None:
        return await self.db.run(_latest, self.workspace)

    async def list(self) -> list[dict[str, Any]]:
        return await self.db.run(_list, self.workspace)

    async def delete(self, session_id: str) -> bool:
        return await self.db.run(_delete, self.workspace, session_id)
