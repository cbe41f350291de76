"""The store on both engines: every store module's SQL runs on SQLite and on a real PostgreSQL 15.

The `db` fixture (conftest.py) is parametrised over the two engines; each test here runs twice.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ghost.errors import Conflict, InsufficientStorage, NotFound, StoreUnavailable
from ghost.store import conversation
from ghost.store.conversation import prefix_digests
from ghost.store.db import MIGRATIONS, Database, SqliteDatabase
from ghost.store.engine import check_url, database_for
from ghost.store.history import ROWS_PER_INSERT, History
from ghost.store.postgres import PostgresDatabase, translate
from ghost.store.responses import ResponseStore
from ghost.store.scratchpad import Scratchpad
from ghost.store.summaries import MAX_ROWS, StoredSummary, Summaries
from ghost.store.turn_limits import start_turn
from ghost.store.users import Users
from ghost.testing.postgres import PostgresServer
from ghost.workspace import state

CHAT = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there"}]


async def test_history_round_trip_list_and_delete(db: Database) -> None:
    history = History(db, "alice")
    await history.save("s1", CHAT)
    await history.save("s2", [*CHAT, {"role": "user", "content": "más ☃"}])
    got = await history.get("s2")
    assert got is not None and got["messages"][-1]["content"] == "más ☃" and got["summary"] is None
    listed = await history.list()
    assert [(row["id"], row["messages"]) for row in listed] == [("s2", 3), ("s1", 2)]  # newest first
    assert isinstance(listed[0]["updated_at"], float)
    assert await history.latest() == "s2"
    assert await History(db, "bob").get("s1") is None and await History(db, "bob").list() == []
    assert await history.delete("s1") is True and await history.delete("s1") is False
    assert [row["id"] for row in await history.list()] == ["s2"]


async def test_history_continuation_finds_the_longest_prefix(db: Database) -> None:
    history = History(db, "alice")
    await history.save("short", CHAT[:1])
    await history.save("long", CHAT)
    request = [*CHAT, {"role": "user", "content": "and then?"}]
    continued = await history.continued_by(prefix_digests(request))
    assert continued is not None and continued.session_id == "long" and continued.writes == 1
    assert await history.continued_by(prefix_digests([{"role": "user", "content": "other"}])) is None
    long, short = await history.head("long"), await history.head("short")
    assert long is not None and short is not None and long.opening == short.opening != ""
    assert await history.head("nothing") is None
    # A conversation longer than one lookup chunk of digests.
    many = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(1200)]
    await history.save("many", many)
    continued = await history.continued_by(prefix_digests([*many, {"role": "user", "content": "x"}]))
    assert continued is not None and continued.session_id == "many"


def _rows(conn, ws: str, session_id: str) -> list[tuple[int, str, int]]:
    return [tuple(row) for row in conn.execute(
        "SELECT position, message, written FROM history_messages WHERE workspace = ? AND session_id = ? "
        "ORDER BY position", (ws, session_id)).fetchall()]


def _say(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


async def test_history_a_turn_appends_its_new_messages_only(db: Database) -> None:
    history = History(db, "alice")
    first = [_say("user", "one"), _say("assistant", "1")]
    await history.save("s", first)
    before = await db.run(_rows, "alice", "s")
    second = [*first, _say("user", "two"), _say("assistant", "2")]
    await history.save("s", second, 1)
    after = await db.run(_rows, "alice", "s")
    # The first turn's rows are as they were (a rewrite would mark them with the second write).
    assert after[:2] == before and [written for _, _, written in after] == [1, 1, 2, 2]
    got = await history.get("s")
    assert got is not None and got["messages"] == second
    continued = await history.continued_by(prefix_digests([*second, _say("user", "three")]))
    assert continued is not None and continued.session_id == "s" and continued.writes == 2
    assert (await history.list())[0]["messages"] == 4


async def test_history_rows_are_the_messages_as_json_dumps_writes_them(db: Database) -> None:
    # Plain messages are encoded without json.dumps (issue 27): the text must not differ by a character.
    odd = [_say("user", 'quotes " and \\ back\nslash\t\x01 ☃ 𝄞 <b>'), _say("assistant", ""),
           {"content": "content first", "role": "user"}, {"role": "user", "content": [{"type": "text", "text": "x"}]},
           {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function",
                                                                   "function": {"name": "f", "arguments": "{}"}}]},
           {"role": "tool", "content": "42", "tool_call_id": "c"}, {"role": 5, "content": "odd role"}]
    await History(db, "alice").save("s", odd)
    assert [text for _, text, _ in await db.run(_rows, "alice", "s")] == [json.dumps(m, ensure_ascii=False) for m in odd]


async def test_history_a_long_new_session_is_stored_row_for_row(db: Database) -> None:
    # A new session's rows go in ROWS_PER_INSERT to a statement (issue 27); the rest one by one.
    odd = {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function",
                                                                  "function": {"name": "f", "arguments": "{}"}}]}
    messages = [_say("user" if i % 2 == 0 else "assistant", f"m{i} ☃") for i in range(2 * ROWS_PER_INSERT + 3)]
    messages[ROWS_PER_INSERT + 1] = odd
    history = History(db, "alice")
    await history.save("s", messages)
    rows = await db.run(_rows, "alice", "s")
    assert rows == [(i, json.dumps(m, ensure_ascii=False), 1) for i, m in enumerate(messages)]
    digests = await db.run(_digests, "alice", "s")
    assert digests == prefix_digests(messages)
    longer = [*messages, _say("user", "next"), _say("assistant", "reply")]
    await history.save("s", longer, 1)
    got = await history.get("s")
    assert got is not None and got["messages"] == longer


def _digests(conn, ws: str, session_id: str) -> list[str]:
    return [row[0] for row in conn.execute("SELECT digest FROM history_messages WHERE workspace = ? AND "
                                           "session_id = ? ORDER BY position", (ws, session_id)).fetchall()]


async def test_history_a_new_session_of_200_messages_is_two_inserts_and_the_rest(tmp_path: Path) -> None:
    db = await SqliteDatabase(tmp_path / "ghost.db").open()
    try:
        inserts: list[str] = []
        db.connection.set_trace_callback(lambda sql: inserts.append(sql) if "INTO history_messages" in sql else None)
        messages = [_say("user" if i % 2 == 0 else "assistant", f"m{i}") for i in range(2 * ROWS_PER_INSERT + 2)]
        await History(db, "alice").save("s", messages)
        assert len(inserts) == 4  # two of ROWS_PER_INSERT rows each, then one per remaining row
        db.connection.set_trace_callback(None)
        assert len(await db.run(_rows, "alice", "s")) == len(messages)
    finally:
        await db.close()


async def test_history_a_write_does_not_chain_again_what_the_caller_chained(db: Database,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    history = History(db, "alice")
    request = [_say("user", f"q{i}") for i in range(30)]
    chained = prefix_digests(request)  # as the continuation takes them to find the session
    walked: list[int] = []
    real = conversation._steps.chain
    monkeypatch.setattr(conversation._steps, "chain", lambda messages, previous: walked.append(len(messages))
                        or real(messages, previous))
    await history.save("s", [*request, _say("assistant", "a")], None, chained)
    assert walked == [1]  # the reply only
    continued = await history.continued_by(prefix_digests([*request, _say("assistant", "a"), _say("user", "next")]))
    assert continued is not None and continued.session_id == "s"


async def test_history_a_regenerated_turn_replaces_what_it_differs_in(db: Database) -> None:
    history = History(db, "alice")
    opening = [_say("user", "q"), _say("assistant", "a")]
    await history.save("s", [*opening, _say("user", "first try"), _say("assistant", "meh")])
    head = await history.head("s")
    assert head is not None and head.writes == 1
    # The client edited its last message after the turn was stored: that tail is replaced.
    edited = [*opening, _say("user", "second try"), _say("assistant", "better")]
    await history.save("s", edited, head.writes)
    got = await history.get("s")
    assert got is not None and got["messages"] == edited
    assert [written for _, _, written in await db.run(_rows, "alice", "s")] == [1, 1, 2, 2]
    shorter = [_say("user", "q"), _say("assistant", "again")]  # regenerated the first reply
    await history.save("s", shorter, 2)
    got = await history.get("s")
    assert got is not None and got["messages"] == shorter
    continued = await history.continued_by(prefix_digests([*shorter, _say("user", "next")]))
    assert continued is not None and continued.session_id == "s"


async def test_history_two_turns_at_once_keep_both_replies_in_finish_order(db: Database) -> None:
    history = History(db, "alice")
    opening = [_say("user", "q"), _say("assistant", "a")]
    await history.save("s", opening)
    head = await history.head("s")
    assert head is not None
    # Both turns started from the same stored conversation; B finishes first, then A.
    turn_b = [*opening, _say("user", "B"), _say("assistant", "answer B")]
    turn_a = [*opening, _say("user", "A"), _say("assistant", "answer A")]
    await history.save("s", turn_b, head.writes)
    await history.save("s", turn_a, head.writes)
    got = await history.get("s")
    both = [*opening, _say("user", "B"), _say("assistant", "answer B"), _say("user", "A"), _say("assistant", "answer A")]
    assert got is not None and got["messages"] == both
    # The stored digests chain over what is stored: a client sending all of it continues the session.
    continued = await history.continued_by(prefix_digests([*both, _say("user", "next")]))
    assert continued is not None and continued.session_id == "s" and continued.writes == 3
    assert (await history.head("s")).opening == head.opening


async def test_history_writes_of_one_session_at_once_all_land(db: Database) -> None:
    # Two turns' writes in flight together (on PostgreSQL, in two pool connections at once): each
    # appends at the length it reads, so without the session's write lock the later insert would hit
    # the earlier one's positions. Many rounds, each a pair started from the same stored head.
    history = History(db, "alice")
    stored = [_say("user", "q"), _say("assistant", "a")]
    await history.save("s", stored)
    rounds = 150
    for i in range(rounds):
        head = await history.head("s")
        assert head is not None
        pair = [[*stored, _say("user", f"{i} {who}"), _say("assistant", f"answer {i} {who}")] for who in "AB"]
        await asyncio.gather(*(history.save("s", turn, head.writes) for turn in pair))
        got = await history.get("s")
        assert got is not None
        stored = got["messages"]
        assert {m["content"] for m in stored[-4:]} == {f"{i} A", f"answer {i} A", f"{i} B", f"answer {i} B"}
    assert len(stored) == 2 + 4 * rounds


async def test_history_replace_and_snapshot_move_whole_conversations(db: Database) -> None:
    history = History(db, "alice")
    await history.save("s", [_say("user", "old"), _say("assistant", "old")])
    loaded = state.SessionState(chat_history=[_say("user", "from the archive")], scratchpad={})
    await db.run(state.restore, "alice", "s", loaded)
    assert (await db.run(state.snapshot, "alice", "s", True)).chat_history == loaded.chat_history
    assert (await db.run(state.snapshot, "alice", "other", True)).chat_history == []
    got = await history.get("s")
    assert got is not None and got["messages"] == loaded.chat_history
    assert await history.delete("s") is True and await db.run(_rows, "alice", "s") == []


async def test_summaries_longest_use_and_bound(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    summaries, history = Summaries(db, "alice"), History(db, "alice")
    await history.save("s1", CHAT)
    await summaries.put(StoredSummary("h1", 2, "two"), "s1")
    await summaries.put(StoredSummary("h2", 4, "four"), "s1")
    await summaries.put(StoredSummary("h1", 2, "two, again"), "s1")  # the same prefix replaces its text
    best = await summaries.longest(["h1", "h2", "h3"])
    assert best == StoredSummary("h2", 4, "four")
    assert await summaries.longest(["h1"]) == StoredSummary("h1", 2, "two, again")
    assert await Summaries(db, "bob").longest(["h1", "h2"]) is None
    got = await history.get("s1")
    assert got is not None and got["summary"]["text"] == "two, again" and got["summary"]["messages"] == 2
    monkeypatch.setattr("ghost.store.summaries.MAX_ROWS", 2)
    await summaries.put(StoredSummary("h3", 6, "six"), "s1")
    # h2 is now the oldest (h1 was written again after it): it goes, the two newest stay.
    assert await summaries.longest(["h2"]) is None
    assert await summaries.longest(["h1"]) is not None and await summaries.longest(["h3"]) is not None
    assert MAX_ROWS > 2  # the real bound is untouched


async def test_users_keys_limits_and_purge(db: Database) -> None:
    users = Users(db)
    key_id, key = await users.create("carol")
    user = await users.by_key(key)
    assert user is not None and (user.name, user.role) == ("carol", "user")
    with pytest.raises(Conflict):
        await users.create("carol")
    assert (await users.ensure("dave")).role == "user" and (await users.ensure("dave")).name == "dave"
    assert await users.set_limits("carol", {"turns_per_minute": 3}) == {"turns_per_minute": 3}
    await users.count_turn("carol")
    listed = {row["name"]: row for row in await users.list()}
    assert listed["carol"]["turns"] == 1 and listed["carol"]["key_ids"] == [key_id]
    assert listed["admin"]["role"] == "admin"
    await Scratchpad(db, max_entries=5, max_value_bytes=100, workspace="carol").set("k", 1)
    assert await users.delete("carol", purge=True) is True
    assert await users.by_key(key) is None  # its keys went with it (ON DELETE CASCADE)
    assert await Scratchpad(db, max_entries=5, max_value_bytes=100, workspace="carol").list() == []


async def test_concurrent_creates_of_one_name_give_one_user_and_conflicts(db: Database) -> None:
    users = Users(db)
    results = await asyncio.gather(*(users.create("eve") for _ in range(8)), return_exceptions=True)
    assert sum(isinstance(r, tuple) for r in results) == 1
    assert all(isinstance(r, Conflict) for r in results if not isinstance(r, tuple))


async def test_scratchpad_sizes_are_bytes_of_json(db: Database) -> None:
    pad = Scratchpad(db, max_entries=5, max_value_bytes=1000, workspace="alice")
    await pad.set("snow", "☃")  # 3 bytes of UTF-8 in quotes
    await pad.set("pct", "100% ?")  # the placeholder translation must leave values alone
    sizes = {entry.key: entry.size for entry in await pad.list()}
    assert sizes == {"snow": 5, "pct": 8}
    assert await pad.get("pct") == "100% ?"
    # Newest first, the first 3 characters (not bytes) of each value's JSON.
    assert await pad.previews(3, 10) == (2, [("pct", '"10'), ("snow", '"☃"')])


async def test_workspace_state_exports_and_imports_rows(db: Database) -> None:
    """Save/load move rows (history + scratchpad) in and out of the store, whichever engine it is."""
    pad = Scratchpad(db, max_entries=5, max_value_bytes=1000, workspace="alice")
    await pad.set("old", {"a": 1})
    await History(db, "alice").save("s1", CHAT)
    saved = await db.run(state.snapshot, "alice", "s1", True)
    assert saved.chat_history == CHAT and saved.scratchpad == {"old": {"a": 1}}
    await db.run(state.restore, "bob", "s9", saved)
    assert (await db.run(state.snapshot, "bob", "s9", True)) == saved
    await db.run(state.restore, "alice", "s1", state.SessionState([], {"new": [1, 2]}))
    assert await pad.list() != [] and await pad.get("new") == [1, 2]
    with pytest.raises(NotFound):  # the load replaced the whole scratchpad
        await pad.get("old")


async def test_a_failing_function_rolls_back_everything_it_wrote(db: Database) -> None:
    def half(conn: object) -> None:
        state.restore(conn, "alice", "s1", state.SessionState(CHAT, {"k": 1}))  # type: ignore[arg-type]
        raise InsufficientStorage("stop here")

    with pytest.raises(InsufficientStorage):
        await db.run(half)
    assert await History(db, "alice").get("s1") is None
    assert await Scratchpad(db, max_entries=5, max_value_bytes=100, workspace="alice").list() == []


async def test_responses_limit_keeps_the_newest(db: Database) -> None:
    store = ResponseStore(db, "alice", max_stored=2)
    for n in range(4):
        await store.save(f"resp_{n}", None, {"n": n}, CHAT)
    assert [await store.get(f"resp_{n}") is not None for n in range(4)] == [False, False, True, True]


async def test_turn_starts_per_minute(db: Database) -> None:
    assert [await start_turn(db, "carol", 2) for _ in range(3)][:2] == [0, 0]
    assert 1 <= await start_turn(db, "carol", 2) <= 60
    assert await start_turn(db, "dave", 2) == 0  # another user's count is its own


async def test_ping_answers(db: Database) -> None:
    await db.ping()


# --- PostgreSQL only ---------------------------------------------------------------------------
def test_translation_of_placeholders_and_types() -> None:
    assert translate("SELECT '%' || ? WHERE a = ?") == "SELECT '%%' || %s WHERE a = %s"
    assert translate("CREATE TABLE t (at REAL NOT NULL)") == "CREATE TABLE t (at DOUBLE PRECISION NOT NULL)"
    assert translate("SELECT REAL_NAME FROM t") == "SELECT REAL_NAME FROM t"


def test_database_urls() -> None:
    assert check_url("") == "" and check_url("sqlite:///var/lib/ghost/ghost.db")
    assert check_url("postgresql://ghost@db:5432/ghost")
    for bad in ("sqlite://relative.db", "mysql://x", "sqlite:///", "/tmp/ghost.db"):
        with pytest.raises(ValueError):
            check_url(bad)
    assert isinstance(database_for("", Path("/nonexistent/ghost.db")), SqliteDatabase)
    assert isinstance(database_for("postgresql://ghost@127.0.0.1:1/x", Path("/x")), PostgresDatabase)


async def test_replicas_starting_at_once_migrate_once(postgres: PostgresServer) -> None:
    url = postgres.create_database("migrate_race")
    databases = [PostgresDatabase(url, pool_size=2) for _ in range(4)]
    await asyncio.gather(*(d.open() for d in databases))
    try:
        version = await databases[0].run(lambda conn: conn.execute("SELECT version FROM ghost_schema").fetchall())
        assert version == [(len(MIGRATIONS),)]
        users = await Users(databases[1]).list()
        assert [row["name"] for row in users] == ["admin"]  # migration 4 ran once: one admin
    finally:
        await asyncio.gather(*(d.close() for d in databases))


async def test_a_database_restart_fails_clearly_then_recovers(tmp_path: Path) -> None:
    server = PostgresServer().start()
    try:
        db = await PostgresDatabase(server.create_database("restart"), pool_size=2,
                                    connect_timeout_s=2).open()
        history = History(db, "alice")
        await history.save("s1", CHAT)
        server.stop()
        with pytest.raises(StoreUnavailable):
            await history.get("s1")
        with pytest.raises(StoreUnavailable):
            await db.ping()
        server.start()
        # No Ghost restart: the pool replaces its dead connections. Until it has, requests keep
        # failing with the same clear error, never another one (bounded: 60 tries).
        for _ in range(60):
            try:
                got = await history.get("s1")
                break
            except StoreUnavailable:
                await asyncio.sleep(0.5)
        else:
            raise AssertionError("the store did not recover after the database came back")
        assert got is not None and got["messages"] == CHAT
        await history.save("s2", CHAT)  # writes too
        await db.close()
    finally:
        server.remove()


async def test_a_sqlite_url_names_the_file(tmp_path: Path) -> None:
    db = await database_for(f"sqlite://{tmp_path / 'elsewhere.db'}", tmp_path / "default.db").open()
    try:
        await History(db, "alice").save("s1", CHAT)
    finally:
        await db.close()
    assert (tmp_path / "elsewhere.db").is_file() and not (tmp_path / "default.db").exists()


def test_serve_refuses_a_database_url_it_cannot_open(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "ghost", "serve", "--home", str(tmp_path),
                             "--database-url", "mysql://ghost@db/ghost"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "database_url" in result.stderr
