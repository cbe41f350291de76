"""The stored Responses API responses on SQLite and PostgreSQL (the `db` fixture): a response belongs
to its workspace only."""

from __future__ import annotations

from pathlib import Path

from ghost.store.db import Database, SqliteDatabase
from ghost.store.responses import ResponseStore

BODY = {"id": "resp_1", "object": "response", "output": []}
MESSAGES = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


async def test_saved_response_reads_back(db: Database) -> None:
    store = ResponseStore(db, "alice")
    await store.save("resp_1", "chat-1", BODY, MESSAGES)
    stored = await store.get("resp_1")
    assert stored is not None and (stored.body, stored.messages, stored.session_id) == (BODY, MESSAGES, "chat-1")


async def test_another_workspace_neither_reads_nor_deletes_it(db: Database) -> None:
    alice, bob = ResponseStore(db, "alice"), ResponseStore(db, "bob")
    await alice.save("resp_1", None, BODY, MESSAGES)
    assert await bob.get("resp_1") is None
    assert await bob.delete("resp_1") is False
    assert await alice.get("resp_1") is not None  # the probe above looked at a row that is there
    assert await alice.delete("resp_1") is True
    assert await alice.get("resp_1") is None and await alice.delete("resp_1") is False


async def test_a_reopened_database_keeps_it(tmp_path: Path) -> None:
    first = await SqliteDatabase(tmp_path / "ghost.db").open()
    await ResponseStore(first, "admin").save("resp_1", None, BODY, MESSAGES)
    await first.close()
    second = await SqliteDatabase(tmp_path / "ghost.db").open()
    try:
        assert (await ResponseStore(second, "admin").get("resp_1")) is not None
    finally:
        await second.close()


async def test_past_the_limit_the_oldest_go(db: Database) -> None:
    alice, bob = ResponseStore(db, "alice", max_stored=2), ResponseStore(db, "bob", max_stored=2)
    await bob.save("resp_b", None, BODY, MESSAGES)
    for n in range(3):
        await alice.save(f"resp_{n}", None, BODY, MESSAGES)
    assert [await alice.get(f"resp_{n}") is not None for n in range(3)] == [False, True, True]
    assert await bob.get("resp_b") is not None  # another workspace's count is its own
