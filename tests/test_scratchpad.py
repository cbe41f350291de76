"""The scratchpad: JSON values in the store (SQLite and PostgreSQL: the `db` fixture), bounded,
surviving restarts; and its tools."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from ghost.errors import BadRequest, LimitExceeded, NotFound
from ghost.store.db import Database, SqliteDatabase
from ghost.store.scratchpad import MAX_KEY_CHARS, Scratchpad
from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer
from ghost.tools.base import ToolContext
from ghost.tools.registry import Registry
from ghost.tools.scratchpad import ScratchpadTools

CTX = ToolContext(request_id="test", session_id="test")


@pytest.fixture()
def pad(db: Database) -> Scratchpad:
    return Scratchpad(db, max_entries=5, max_value_bytes=1000)


async def keys(pad: Scratchpad) -> list[str]:
    return [entry.key for entry in await pad.list()]


@pytest.mark.parametrize("value", ["text", "ünïcödé ✓", 42, -1.5, True, None, [1, "two", [3]],
                                   {"nested": {"list": [1, 2], "flag": False}}, "", []])
async def test_any_json_value_round_trips(pad: Scratchpad, value: Any) -> None:
    await pad.set("k", value)
    assert await pad.get("k") == value


async def test_set_replaces_and_list_all_delete(pad: Scratchpad) -> None:
    await pad.set("b", 1)
    await pad.set("a", "x")
    await pad.set("b", {"v": 2})
    assert (await pad.get("a"), await pad.get("b")) == ("x", {"v": 2})
    assert [(e.key, e.size) for e in await pad.list()] == [("a", 3), ("b", 7)]
    assert await pad.delete("a") is True
    assert await pad.delete("a") is False
    with pytest.raises(NotFound):
        await pad.get("a")


async def test_value_size_is_bounded(pad: Scratchpad) -> None:
    await pad.set("fits", "x" * 990)
    with pytest.raises(LimitExceeded, match="at most 1,000"):
        await pad.set("too-big", "x" * 1000)
    with pytest.raises(LimitExceeded):
        await pad.set("fits", "é" * 600)  # 1,202 bytes of UTF-8: bytes count, not characters
    assert await pad.get("fits") == "x" * 990 and "too-big" not in await keys(pad)


async def test_entry_count_is_bounded_even_under_concurrent_writes(pad: Scratchpad) -> None:
    results = await asyncio.gather(*(pad.set(f"k{i}", i) for i in range(20)), return_exceptions=True)
    assert sum(r is None for r in results) == 5
    assert all(isinstance(r, LimitExceeded) for r in results if r is not None)
    assert len(await keys(pad)) == 5
    kept = (await keys(pad))[0]
    await pad.set(kept, "updating an existing key still works when full")


@pytest.mark.parametrize("key", ["", "   ", "k" * (MAX_KEY_CHARS + 1), 5, None])
async def test_bad_keys(pad: Scratchpad, key: Any) -> None:
    with pytest.raises(BadRequest):
        await pad.set(key, 1)


async def test_non_json_values_are_refused(pad: Scratchpad) -> None:
    for value in (float("nan"), float("inf"), {1, 2}, object()):
        with pytest.raises(BadRequest, match="JSON"):
            await pad.set("k", value)


async def test_survives_a_restart(tmp_path: Path) -> None:
    first = await SqliteDatabase(tmp_path / "ghost.db").open()
    await Scratchpad(first, max_entries=10, max_value_bytes=1000).set("plan", {"step": 3})
    await first.close()
    second = await SqliteDatabase(tmp_path / "ghost.db").open()
    try:
        assert await Scratchpad(second, max_entries=10, max_value_bytes=1000).get("plan") == {"step": 3}
    finally:
        await second.close()


async def test_an_archives_entries_are_checked_against_the_same_limits(pad: Scratchpad) -> None:
    # What a workspace load asks before it changes anything (the load itself: test_workspace_swap).
    assert pad.checked_entries({"new": [1], "other": "x"}) == {"new": "[1]", "other": '"x"'}
    with pytest.raises(LimitExceeded):
        pad.checked_entries({f"k{i}": i for i in range(6)})
    with pytest.raises(LimitExceeded):
        pad.checked_entries({"a": 1, "b": "x" * 2000})


# --- the tools ------------------------------------------------------------------------------------

@pytest.fixture()
def tools(pad: Scratchpad) -> tuple[Registry, ScratchpadTools]:
    registry = Registry(result_max_chars=5000)
    pad_tools = ScratchpadTools(pad)
    registry.add_functions(*pad_tools.functions())
    return registry, pad_tools


async def test_tools_round_trip(tools: tuple[Registry, ScratchpadTools]) -> None:
    registry, _ = tools
    assert (await registry.call("scratchpad_set", json.dumps({"key": "todo", "value": ["a", "b"]}), CTX)).ok
    got = await registry.call("scratchpad_get", '{"key": "todo"}', CTX)
    assert got.ok and json.loads(got.content) == ["a", "b"]
    listed = await registry.call("scratchpad_list", "", CTX)
    assert listed.content == "todo (9 bytes)"
    assert (await registry.call("scratchpad_delete", '{"key": "todo"}', CTX)).ok
    missing = await registry.call("scratchpad_get", '{"key": "todo"}', CTX)
    assert not missing.ok and "no scratchpad entry 'todo'" in missing.content
    assert not (await registry.call("scratchpad_delete", '{"key": "todo"}', CTX)).ok


async def test_tool_errors_are_results(tools: tuple[Registry, ScratchpadTools]) -> None:
    registry, _ = tools
    too_big = await registry.call("scratchpad_set", json.dumps({"key": "k", "value": "x" * 5000}), CTX)
    assert not too_big.ok and "at most 1,000" in too_big.content
    nan = await registry.call("scratchpad_set", '{"key": "k", "value": NaN}', CTX)
    assert not nan.ok and "JSON" in nan.content
    missing_value = await registry.call("scratchpad_set", '{"key": "k"}', CTX)
    assert not missing_value.ok and "missing required field 'value'" in missing_value.content


async def test_prompt_summary_is_short_and_bounded(pad: Scratchpad, tools: tuple[Registry, ScratchpadTools]) -> None:
    _, pad_tools = tools
    assert await pad_tools.prompt_summary(500) == ""
    await pad.set("goal", "write the report")
    await pad.set("data", {"rows": list(range(200))})
    summary = await pad_tools.prompt_summary(500)
    assert "- goal: \"write the report\"" in summary and "- data: {\"rows\":[0,1,2" in summary
    assert "…" in summary and len(summary) <= 500
    assert len(await pad_tools.prompt_summary(60)) <= 60


async def test_previews_are_read_once_and_refreshed_by_every_write(pad: Scratchpad, db: Database,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []
    real_run = db.run

    async def counted(fn: Any, *args: Any) -> Any:
        if fn.__name__ == "_previews":
            reads.append(1)
        return await real_run(fn, *args)

    monkeypatch.setattr(db, "run", counted)
    await pad.set("a", 1)
    for _ in range(5):
        assert await pad.previews(80, 10) == (1, [("a", "1")])
    assert len(reads) == 1  # the system prompt of every turn reads them: from memory after the first
    await pad.set("b", "two")
    assert await pad.previews(80, 10) == (2, [("b", '"two"'), ("a", "1")])
    await pad.set("a", 3)
    assert await pad.previews(80, 10) == (2, [("a", "3"), ("b", '"two"')])
    assert await pad.delete("b")
    assert await pad.previews(80, 10) == (1, [("a", "3")])
    pad.changed()  # what a workspace load calls after it replaced the scratchpad
    assert await pad.previews(80, 10) == (1, [("a", "3")])
    assert len(reads) == 5


async def test_a_preview_read_that_raced_a_write_is_not_kept(pad: Scratchpad, db: Database,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    await pad.set("a", 1)
    real_run = db.run
    read_started, write_done = asyncio.Event(), asyncio.Event()

    async def slow_previews(fn: Any, *args: Any) -> Any:
        if fn.__name__ != "_previews":
            return await real_run(fn, *args)
        result = await real_run(fn, *args)  # read before the write below...
        read_started.set()
        await write_done.wait()  # ...handed back only after it finished
        return result

    monkeypatch.setattr(db, "run", slow_previews)
    reader = asyncio.create_task(pad.previews(80, 10))
    await read_started.wait()
    await pad.set("a", 2)
    write_done.set()
    assert await reader == (1, [("a", "1")])  # that caller got what was there when it asked
    monkeypatch.setattr(db, "run", real_run)
    assert await pad.previews(80, 10) == (1, [("a", "2")])  # the next one reads the write


# --- through a real Ghost: the model saves a note, Ghost restarts, the model reads it back ---------

def _tool_message(upstream: FakeUpstream) -> str:
    return upstream.chat_requests()[-1]["body"]["messages"][-1]["content"]


def _chat(server: GhostServer) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", headers=server.headers, timeout=60,
                      json={"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]})


def test_scratchpad_survives_a_ghost_restart(upstream: FakeUpstream, tmp_path: Path) -> None:
    home = tmp_path / "home"
    upstream.script(Reply(content="", tool_calls=[{"name": "scratchpad_set",
                                                   "arguments": {"key": "plan", "value": {"step": 2}}}]),
                    Reply(content="noted"))
    with GhostServer("--upstream-url", upstream.url, home=home) as server:
        assert _chat(server).json()["choices"][0]["message"]["content"] == "noted"
        assert _tool_message(upstream) == "saved 'plan'"
    upstream.script(Reply(content="", tool_calls=[{"name": "scratchpad_get", "arguments": {"key": "plan"}}]),
                    Reply(content="done"))
    with GhostServer("--upstream-url", upstream.url, home=home) as server:
        assert _chat(server).status_code == 200
        assert json.loads(_tool_message(upstream)) == {"step": 2}
        system = upstream.chat_requests()[-1]["body"]["messages"][0]["content"]
        assert 'plan: {"step":2}' in system  # the system prompt shows the scratchpad
