"""Per-user turn limits that hold across replicas sharing one store (PostgreSQL).

Turns per minute: the start times of each user's turns in the last minute, in `turn_starts`,
checked and appended in one transaction under the user's write lock. Turns at once: one of the
user's `limit` slots, each a PostgreSQL advisory lock held by a connection for the turn
(ghost.store.lease), so a replica that dies frees its slots with its connections.

Times are the replicas' clocks (time.time()): keep them in sync (NTP), as for any cluster.
"""

from __future__ import annotations

import math
import time

from ghost.store.db import Conn, Database, write_lock

WINDOW_S = 60.0


def _start(conn: Conn, user: str, now: float, per_minute: int) -> int:
    """Record a turn start of `user` unless `per_minute` started in the last minute: 0, or the
    seconds to wait."""
    write_lock(conn, f"turn_starts:{user}")
    conn.execute("DELETE FROM turn_starts WHERE user_name = ? AND started_at <= ?", (user, now - WINDOW_S))
    rows = conn.execute("SELECT started_at FROM turn_starts WHERE user_name = ? ORDER BY started_at LIMIT ?",
                        (user, per_minute)).fetchall()
    if len(rows) >= per_minute:
        return max(1, math.ceil(WINDOW_S - (now - rows[0][0])))
    conn.execute("INSERT INTO turn_starts (user_name, started_at) VALUES (?, ?)", (user, now))
    return 0


async def start_turn(db: Database, user: str, per_minute: int) -> int:
    """0 if `user` may start a turn now (recorded), else the seconds until one may."""
    return await db.run(_start, user, time.time(), per_minute)
