"""The tool registry and the file and execute tools, in-process, on a real database and bubblewrap."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ghost.config import Settings
from ghost.tools.base import ToolContext, ToolResult
from ghost.tools.registry import Registry, Tool
from ghost.tools.schema import SchemaError, function_schema
from ghost.tools.setup import Toolbox, start_tools
from ghost.workspace.service import open_workspace

CTX = ToolContext(request_id="test", session_id="test")
BUILTIN = {"list_files", "read_file", "write_file", "append_file", "delete_file", "move_file", "search_files",
           "execute", "scratchpad_set", "scratchpad_get", "scratchpad_list", "scratchpad_delete",
           "create_skill", "list_skills", "delete_skill"}


@dataclass
class Env:
    registry: Registry
    toolbox: Toolbox
    root: Path
    outside: Path

    async def call(self, name: str, arguments: dict[str, Any] | str = "") -> ToolResult:
        raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
        return await self.registry.call(name, raw, CTX)


async def start(home: Path, **overrides: Any) -> tuple[Toolbox, AsyncExitStack]:
    settings = Settings(**{"home": home, "sandbox_backend": "bwrap", "sandbox_timeout": 10, **overrides})
    stack = AsyncExitStack()
    workspace = await open_workspace(settings)
    stack.push_async_callback(workspace.db.close)
    return await start_tools(settings, workspace.sandbox_root, workspace.scratchpad, stack), stack


@pytest.fixture()
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("outside-secret-77\n")
    toolbox, stack = await start(tmp_path / "home", tool_result_max_chars=4000, tool_list_max_entries=20,
                                 sandbox_file_size_bytes=100_000)
    async with stack:
        yield Env(toolbox.registry, toolbox, Settings(home=tmp_path / "home").sandbox_path, outside)


# --- the registry ---------------------------------------------------------------------------------

async def test_every_builtin_tool_has_a_complete_schema(env: Env) -> None:
    schemas = {s["function"]["name"]: s for s in env.registry.schemas()}
    assert set(schemas) == BUILTIN
    for schema in schemas.values():
        function = schema["function"]
        assert schema["type"] == "function" and len(function["description"]) > 20
        assert function["parameters"]["type"] == "object"
        assert function["parameters"]["additionalProperties"] is False
        for prop in function["parameters"]["properties"].values():
            assert prop["description"]
    assert schemas["read_file"]["function"]["parameters"]["required"] == ["path"]
    assert schemas["execute"]["function"]["parameters"]["properties"]["language"]["enum"] == ["python", "bash"]
    assert env.toolbox.sandbox_info["backend"] == "bubblewrap"


@pytest.mark.parametrize("arguments, expected", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('"path"', "must be a JSON object"),
    ("{}", "missing required field 'path'"),
    ('{"path": 5}', "path must be string, not integer"),
    ('{"path": "a", "offset": true}', "offset must be integer, not boolean"),
    ('{"path": "a", "offset": 1.5}', "offset must be integer, not number"),
    ('{"path": "a", "mode": "fast"}', "unknown field 'mode'"),
])
async def test_bad_arguments_become_clear_failures(env: Env, arguments: str, expected: str) -> None:
    result = await env.call("read_file", arguments)
    assert not result.ok and expected in result.content, result.content


async def test_enum_and_nested_types_are_enforced(env: Env) -> None:
    result = await env.call("execute", {"code": "print(1)", "language": "ruby"})
    assert not result.ok and "must be one of ['python', 'bash']" in result.content


async def test_unknown_tool(env: Env) -> None:
    result = await env.call("rm_rf", {})
    assert not result.ok and "no tool named 'rm_rf'" in result.content and "read_file" in result.content
    assert not env.registry.has("rm_rf") and env.registry.has("read_file")


async def test_empty_arguments_for_a_tool_without_parameters(env: Env) -> None:
    assert (await env.call("list_skills", "")).ok
    assert (await env.call("scratchpad_list", "{}")).ok


async def test_a_tool_that_raises_is_a_failed_result_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(x: int) -> ToolResult:
        """Always breaks.

        Args:
            x: Anything.
        """
        raise KeyError("boom")

    registry = Registry(result_max_chars=1000)
    registry.add_functions(broken)
    with caplog.at_level(logging.ERROR, logger="ghost.tools"):
        result = await registry.call("broken", '{"x": 1}', CTX)
    assert not result.ok and "internal error" in result.content
    assert "KeyError" in caplog.text


async def test_results_are_bounded() -> None:
    async def chatty() -> ToolResult:
        """Talks a lot."""
        return ToolResult("a" * 5000 + "END")

    registry = Registry(result_max_chars=1000)
    registry.add_functions(chatty)
    result = await registry.call("chatty", "", CTX)
    assert len(result.content) <= 1000 and result.content.endswith("END") and "result cut" in result.content


def test_schemas_are_checked_at_registration() -> None:
    async def undocumented(x: int) -> ToolResult:
        return ToolResult("")

    async def half_documented(x: int, y: int) -> ToolResult:
        """Does things.

        Args:
            x: The x.
        """
        return ToolResult("")

    async def odd_type(x: set[int]) -> ToolResult:
        """Does things.

        Args:
            x: The x.
        """
        return ToolResult("")

    for fn, message in [(undocumented, "docstring"), (half_documented, "'y' is not described"),
                        (odd_type, "no JSON schema")]:
        with pytest.raises(SchemaError, match=message):
            function_schema(fn)
    registry = Registry(result_max_chars=1000)
    with pytest.raises(SchemaError, match="not valid"):
        registry.add(Tool("bad name", "d", {"type": "object"}, odd_type))


# --- files ----------------------------------------------------------------------------------------

async def test_write_read_append(env: Env) -> None:
    assert (await env.call("write_file", {"path": "notes/today.txt", "content": "one\ntwo\n"})).ok
    assert (await env.call("append_file", {"path": "notes/today.txt", "content": "three\n"})).ok
    assert (env.root / "notes" / "today.txt").read_text() == "one\ntwo\nthree\n"
    result = await env.call("read_file", {"path": "notes/today.txt"})
    assert result.ok and result.content == "one\ntwo\nthree\n"
    assert not list((env.root / "notes").glob(".ghost-write-*"))  # the temp file went away


async def test_read_in_slices(env: Env) -> None:
    (env.root / "long.txt").write_text("".join(f"line {i}\n" for i in range(100)))
    first = await env.call("read_file", {"path": "long.txt", "limit": 10})
    assert first.content.startswith("line 0\n") and "line 9\n" in first.content and "line 10\n" not in first.content
    assert "read with offset=10" in first.content
    second = await env.call("read_file", {"path": "long.txt", "offset": 95})
    assert second.content == "".join(f"line {i}\n" for i in range(95, 100))
    beyond = await env.call("read_file", {"path": "long.txt", "offset": 500})
    assert "fewer than 501 lines" in beyond.content


async def test_read_stops_at_the_result_budget_and_says_where(env: Env) -> None:
    (env.root / "wide.txt").write_text("".join(f"{i:04d}" + "w" * 95 + "\n" for i in range(200)))
    result = await env.call("read_file", {"path": "wide.txt"})
    assert len(result.content) <= 4000 and "continues after line" in result.content


async def test_binary_empty_missing_and_folder(env: Env) -> None:
    (env.root / "blob.bin").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
    (env.root / "empty.txt").write_text("")
    (env.root / "folder").mkdir()
    assert "binary file" in (await env.call("read_file", {"path": "blob.bin"})).content
    assert "is empty" in (await env.call("read_file", {"path": "empty.txt"})).content
    missing = await env.call("read_file", {"path": "nope.txt"})
    assert not missing.ok and "does not exist" in missing.content
    folder = await env.call("read_file", {"path": "folder"})
    assert not folder.ok and "not a file" in folder.content
    assert not (await env.call("write_file", {"path": "folder", "content": "x"})).ok


async def test_write_size_limit(env: Env) -> None:
    result = await env.call("write_file", {"path": "big.txt", "content": "x" * 100_001})
    assert not result.ok and "at most 100,000" in result.content and not (env.root / "big.txt").exists()
    await env.call("write_file", {"path": "grow.txt", "content": "x" * 60_000})
    assert not (await env.call("append_file", {"path": "grow.txt", "content": "x" * 60_000})).ok


async def test_list_files(env: Env) -> None:
    (env.root / "a" / "b").mkdir(parents=True)
    (env.root / "a" / "b" / "deep.txt").write_text("12345")
    (env.root / "top.txt").write_text("x")
    os.symlink("top.txt", env.root / "alias")
    flat = await env.call("list_files", {})
    assert flat.content.splitlines() == ["a/", "alias -> top.txt (link)", "top.txt (1 bytes)"]
    deep = await env.call("list_files", {"path": "a", "recursive": True})
    assert deep.content.splitlines() == ["b/", "b/deep.txt (5 bytes)"]
    for i in range(30):
        (env.root / f"many-{i:02d}").write_text("")
    capped = await env.call("list_files", {})
    assert "stopped after 20 entries" in capped.content


async def test_delete(env: Env) -> None:
    (env.root / "full" / "inner").mkdir(parents=True)
    (env.root / "full" / "inner" / "f").write_text("x")
    (env.root / "target.txt").write_text("keep me")
    os.symlink("target.txt", env.root / "link")
    refused = await env.call("delete_file", {"path": "full"})
    assert not refused.ok and "recursive=true" in refused.content
    assert (await env.call("delete_file", {"path": "full", "recursive": True})).ok
    assert (await env.call("delete_file", {"path": "link"})).ok
    assert not (env.root / "full").exists() and not (env.root / "link").is_symlink()
    assert (env.root / "target.txt").read_text() == "keep me"
    assert not (await env.call("delete_file", {"path": "link"})).ok  # gone already


async def test_move(env: Env) -> None:
    (env.root / "a.txt").write_text("A")
    (env.root / "b.txt").write_text("B")
    (env.root / "dir").mkdir()
    assert (await env.call("move_file", {"source": "a.txt", "destination": "renamed.txt"})).ok
    refused = await env.call("move_file", {"source": "renamed.txt", "destination": "b.txt"})
    assert not refused.ok and "overwrite=true" in refused.content
    assert (await env.call("move_file", {"source": "renamed.txt", "destination": "b.txt", "overwrite": True})).ok
    assert (env.root / "b.txt").read_text() == "A"
    assert (await env.call("move_file", {"source": "b.txt", "destination": "dir"})).ok
    assert (env.root / "dir" / "b.txt").read_text() == "A"
    into_itself = await env.call("move_file", {"source": "dir", "destination": "dir/sub"})
    assert not into_itself.ok


async def test_search(env: Env) -> None:
    (env.root / "src").mkdir()
    (env.root / "src" / "a.py").write_text("import os\nNEEDLE = 1\n")
    (env.root / "src" / "b.txt").write_text("nothing\nthe needle again\n")
    (env.root / "blob.bin").write_bytes(b"needle\0binary")
    found = await env.call("search_files", {"query": "needle"})
    assert found.content.splitlines() == ["src/a.py:2: NEEDLE = 1", "src/b.txt:2: the needle again"]
    exact = await env.call("search_files", {"query": "NEEDLE", "case_sensitive": True, "path": "src"})
    assert exact.content == "src/a.py:2: NEEDLE = 1"
    assert "no matches" in (await env.call("search_files", {"query": "absent"})).content


# --- paths that try to leave -----------------------------------------------------------------------

ESCAPES = ["../outside/secret.txt", "/etc/passwd", "a/../../x", "a\x00b", "a\\..\\b", "n" * 300,
           "/".join(["d" * 200] * 25), "C:/x"]


@pytest.mark.parametrize("bad", ESCAPES)
async def test_every_file_tool_refuses_bad_paths(env: Env, bad: str) -> None:
    calls = [("read_file", {"path": bad}), ("write_file", {"path": bad, "content": "x"}),
             ("append_file", {"path": bad, "content": "x"}), ("delete_file", {"path": bad}),
             ("list_files", {"path": bad}), ("search_files", {"query": "x", "path": bad}),
             ("move_file", {"source": bad, "destination": "here"}),
             ("move_file", {"source": "here", "destination": bad})]
    (env.root / "here").write_text("x")
    for name, arguments in calls:
        result = await env.call(name, arguments)
        assert not result.ok, (name, bad)
        assert str(env.root) not in result.content  # no host paths in messages
    assert (env.root / "here").read_text() == "x"


async def test_symlinks_made_by_sandboxed_code_do_not_lead_out(env: Env) -> None:
    # Inside bubblewrap the target paths do not exist, but the links land in the host directory.
    code = (f"import os; os.symlink({str(env.outside)!r}, 'out'); "
            f"os.symlink({str(env.outside / 'secret.txt')!r}, 'secret_link'); os.symlink('/etc', 'etc')")
    assert (await env.call("execute", {"code": code})).ok
    attempts = [("read_file", {"path": "secret_link"}), ("read_file", {"path": "out/secret.txt"}),
                ("read_file", {"path": "etc/passwd"}), ("write_file", {"path": "out/new.txt", "content": "x"}),
                ("write_file", {"path": "secret_link", "content": "overwritten"}),
                ("append_file", {"path": "secret_link", "content": "more"}),
                ("list_files", {"path": "out"}), ("delete_file", {"path": "out/secret.txt"}),
                ("move_file", {"source": "out/secret.txt", "destination": "stolen.txt"}),
                ("move_file", {"source": "secret_link", "destination": "out/x"}),
                ("search_files", {"query": "x", "path": "out"})]
    for name, arguments in attempts:
        result = await env.call(name, arguments)
        assert not result.ok and "outside the sandbox" in result.content, (name, result.content)
    everywhere = await env.call("search_files", {"query": "outside-secret"})
    assert "no matches" in everywhere.content
    listing = await env.call("list_files", {"recursive": True})
    assert not [line for line in listing.content.splitlines() if line.startswith("out/")]  # not walked into
    assert (env.outside / "secret.txt").read_text() == "outside-secret-77\n"
    assert sorted(p.name for p in env.outside.iterdir()) == ["secret.txt"]
    # The links themselves are the sandbox's own and can be removed.
    assert (await env.call("delete_file", {"path": "secret_link"})).ok
    assert (env.outside / "secret.txt").exists()


# --- execute --------------------------------------------------------------------------------------

async def test_execute_python_and_bash(env: Env) -> None:
    result = await env.call("execute", {"code": "import sys; print('hi'); print('oops', file=sys.stderr)"})
    assert result.ok and result.content.startswith("exit code 0") and "stdout:\nhi\n" in result.content
    assert "stderr:\noops" in result.content and result.summary.startswith("python: exit 0")
    shell = await env.call("execute", {"code": "echo $((6*7)); exit 3", "language": "bash"})
    assert not shell.ok and shell.content.startswith("exit code 3") and "42" in shell.content


async def test_execute_and_the_file_tools_share_the_folder(env: Env) -> None:
    await env.call("write_file", {"path": "data.csv", "content": "a,b\n1,2\n"})
    result = await env.call("execute", {"code": "print(sum(int(x) for x in open('data.csv').read().split()[1].split(',')))"})
    assert "stdout:\n3\n" in result.content
    await env.call("execute", {"code": "open('made.txt', 'w').write('by code')"})
    assert (await env.call("read_file", {"path": "made.txt"})).content == "by code"


async def test_execute_limit_is_reported(tmp_path: Path) -> None:
    toolbox, stack = await start(tmp_path / "home", sandbox_timeout=1)
    async with stack:
        result = await toolbox.registry.call("execute", json.dumps({"code": "while True: pass"}), CTX)
    assert not result.ok and result.content.startswith("stopped: it ran past the time limit of 1 s")
    assert "stopped (timeout)" in result.summary


async def test_execute_refuses_oversized_code(tmp_path: Path) -> None:
    toolbox, stack = await start(tmp_path / "home", tool_code_max_chars=100)
    async with stack:
        result = await toolbox.registry.call("execute", json.dumps({"code": "x = 1\n" * 50}), CTX)
    assert not result.ok and "write it to a file" in result.content


async def test_cancelling_a_tool_call_kills_its_process(env: Env) -> None:
    marker = f"toolcancel-{uuid.uuid4().hex}"
    call = asyncio.create_task(env.call("execute", {"code": f"import time  # {marker}\ntime.sleep(300)"}))
    deadline = time.monotonic() + 60
    while not _running(marker) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert _running(marker)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    deadline = time.monotonic() + 60
    while _running(marker) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not _running(marker)


def _running(marker: str) -> bool:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"{entry.path}/cmdline", "rb") as cmdline:
                    if marker.encode() in cmdline.read():
                        return True
            except OSError:
                continue
    return False
