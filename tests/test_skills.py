"""Acquired skills: create, call, list, delete; failed tests; failure counting; re-scan from disk."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from ghost.config import Settings
from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer
from ghost.tools.base import ToolContext, ToolResult
from ghost.tools.registry import Registry
from ghost.tools.setup import Toolbox, start_tools
from ghost.workspace.service import open_workspace

CTX = ToolContext(request_id="test", session_id="test")
ADD_CODE = "import json, sys\nargs = json.load(sys.stdin)\nprint(args['a'] + args['b'])\n"
ADD_PARAMS = {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
              "required": ["a", "b"]}


class Ghost:
    def __init__(self, toolbox: Toolbox, sandbox_root: Path) -> None:
        self.toolbox = toolbox
        self.registry: Registry = toolbox.registry
        self.skills_dir = sandbox_root / "acquired_skills"

    async def call(self, name: str, arguments: dict[str, Any] | str) -> ToolResult:
        raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
        return await self.registry.call(name, raw, CTX)

    async def create(self, name: str = "add", code: str = ADD_CODE, parameters: dict[str, Any] | None = None,
                     test_arguments: dict[str, Any] | None = None, description: str = "Add two numbers.") -> ToolResult:
        return await self.call("create_skill", {
            "name": name, "description": description, "parameters": parameters or ADD_PARAMS, "code": code,
            "test_arguments": {"a": 1, "b": 2} if test_arguments is None else test_arguments})

    def names(self) -> set[str]:
        return {s["function"]["name"] for s in self.registry.schemas()}


async def start(home: Path, stack: AsyncExitStack, **overrides: Any) -> Ghost:
    settings = Settings(**{"home": home, "sandbox_backend": "bwrap", "sandbox_timeout": 10, **overrides})
    workspace = await open_workspace(settings)
    stack.push_async_callback(workspace.db.close)
    toolbox = await start_tools(settings, workspace.sandbox_root, workspace.scratchpad, stack)
    return Ghost(toolbox, workspace.sandbox_root)


@pytest.fixture()
async def ghost(tmp_path: Path) -> AsyncIterator[Ghost]:
    async with AsyncExitStack() as stack:
        yield await start(tmp_path / "home", stack, skill_failure_threshold=2)


async def test_a_skill_round_trips(ghost: Ghost) -> None:
    created = await ghost.create()
    assert created.ok and "saved" in created.content and "3" in created.content
    schema = next(s["function"] for s in ghost.registry.schemas() if s["function"]["name"] == "add")
    assert schema["description"].startswith("Add two numbers.")
    assert schema["parameters"]["properties"] == ADD_PARAMS["properties"]
    assert schema["parameters"]["additionalProperties"] is False

    called = await ghost.call("add", {"a": 40, "b": 2.5})
    assert called.ok and called.content == "42.5\n"

    listed = await ghost.call("list_skills", "")
    assert listed.content == "add(a, b): Add two numbers."
    sidecar = json.loads((ghost.skills_dir / "add.json").read_text())
    assert sidecar["description"] == "Add two numbers." and sidecar["failures"] == 0
    assert (ghost.skills_dir / "add.py").read_text() == ADD_CODE
    assert not list(ghost.skills_dir.glob(".pending-*"))

    assert (await ghost.call("delete_skill", {"name": "add"})).ok
    assert "add" not in ghost.names() and not list(ghost.skills_dir.iterdir())
    assert not (await ghost.call("add", {"a": 1, "b": 2})).ok
    assert not (await ghost.call("delete_skill", {"name": "add"})).ok


async def test_arguments_arrive_as_json_on_stdin(ghost: Ghost) -> None:
    code = "import json, sys\nargs = json.load(sys.stdin)\nprint(json.dumps(args, sort_keys=True))\n"
    params = {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "string"}},
                                               "options": {"type": "object"}}}
    assert (await ghost.create("echo_args", code, params, {"items": ["a"]})).ok
    args = {"items": ["x", "y z", "ü"], "options": {"deep": {"n": [1, None, True]}}}
    result = await ghost.call("echo_args", args)
    assert json.loads(result.content) == args


@pytest.mark.parametrize("code, why", [
    ("import sys\nprint('partial')\nsys.exit(3)", "exit code 3"),
    ("raise ValueError('broken skill')", "ValueError: broken skill"),
    ("x = 1  # prints nothing", "it printed nothing"),
    ("def broken(:\n    pass", "SyntaxError"),
])
async def test_a_skill_whose_test_fails_is_not_registered(ghost: Ghost, code: str, why: str) -> None:
    result = await ghost.create("flaky", code)
    assert not result.ok and "NOT saved" in result.content and why in result.content
    assert "flaky" not in ghost.names()
    assert not ghost.skills_dir.exists() or not list(ghost.skills_dir.iterdir())


async def test_a_test_run_that_hangs_is_not_registered(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        ghost = await start(tmp_path / "home", stack, sandbox_timeout=1)
        result = await ghost.create("hangs", "import time\ntime.sleep(60)\nprint('never')")
        assert not result.ok and "time limit" in result.content and "hangs" not in ghost.names()


@pytest.mark.parametrize("name", ["1abc", "has-dash", "has space", "x" * 65, "", "read_file", "execute",
                                  "create_skill", "naïve"])
async def test_bad_or_taken_names_are_refused(ghost: Ghost, name: str) -> None:
    result = await ghost.create(name)
    assert not result.ok and ("must match" in result.content or "built-in tool" in result.content)
    assert name not in ghost.names() or name in {"read_file", "execute", "create_skill"}


async def test_an_existing_name_is_refused(ghost: Ghost) -> None:
    assert (await ghost.create()).ok
    again = await ghost.create(code="print('other')")
    assert not again.ok and "exists" in again.content
    assert (await ghost.call("add", {"a": 1, "b": 1})).content == "2\n"


@pytest.mark.parametrize("parameters, test_arguments, message", [
    ({"type": "array"}, {}, "must describe an object"),
    ({"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}]}}}, {}, "unsupported schema keywords"),
    ({"type": "object", "properties": {"a": {"type": "texts"}}}, {}, "unknown type"),
    (ADD_PARAMS, {"a": 1}, "missing required field 'b'"),
    (ADD_PARAMS, {"a": 1, "b": "2"}, "b must be number"),
    (ADD_PARAMS, {"a": 1, "b": 2, "c": 3}, "unknown field 'c'"),
])
async def test_bad_parameters_or_test_arguments_are_refused(ghost: Ghost, parameters: dict[str, Any],
                                                            test_arguments: dict[str, Any], message: str) -> None:
    result = await ghost.create(parameters=parameters, test_arguments=test_arguments)
    assert not result.ok and message in result.content
    assert "add" not in ghost.names()


async def test_calls_are_validated_before_the_skill_runs(ghost: Ghost) -> None:
    assert (await ghost.create()).ok
    result = await ghost.call("add", {"a": 1})
    assert not result.ok and "missing required field 'b'" in result.content
    assert json.loads((ghost.skills_dir / "add.json").read_text())["failures"] == 0  # not the skill's fault


async def test_consecutive_failures_are_counted_and_shown(ghost: Ghost) -> None:
    code = "import json, sys\nn = json.load(sys.stdin)['n']\nassert n >= 0, 'negative'\nprint(n)\n"
    params = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    assert (await ghost.create("checked", code, params, {"n": 1})).ok
    first = await ghost.call("checked", {"n": -1})
    assert not first.ok and "AssertionError: negative" in first.content
    assert "1 recent failures" in (await ghost.call("list_skills", "")).content
    await ghost.call("checked", {"n": -2})
    listing = (await ghost.call("list_skills", "")).content
    assert "FAILING: 2 failed calls in a row" in listing
    assert "failing lately" in next(s["function"]["description"] for s in ghost.registry.schemas()
                                    if s["function"]["name"] == "checked")
    assert json.loads((ghost.skills_dir / "checked.json").read_text())["failures"] == 2
    assert (await ghost.call("checked", {"n": 5})).ok
    assert "FAILING" not in (await ghost.call("list_skills", "")).content
    assert json.loads((ghost.skills_dir / "checked.json").read_text())["failures"] == 0


async def test_skills_are_found_again_after_a_restart(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        ghost = await start(tmp_path / "home", stack)
        assert (await ghost.create()).ok
    async with AsyncExitStack() as stack:
        ghost = await start(tmp_path / "home", stack)
        assert "add" in ghost.names()
        assert (await ghost.call("add", {"a": 2, "b": 3})).content == "5\n"


async def test_a_workspace_load_rescans(ghost: Ghost) -> None:
    folder = ghost.skills_dir
    folder.mkdir(exist_ok=True)
    (folder / "shout.py").write_text("import json, sys\nprint(json.load(sys.stdin)['text'].upper())\n")
    (folder / "shout.json").write_text(json.dumps({
        "name": "shout", "description": "Upper-case a text.",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}))
    # Files that must be ignored: broken JSON, a name that does not match, a built-in's name,
    # an unsupported schema, a .json without its .py, and a symlinked script.
    (folder / "broken.py").write_text("print(1)")
    (folder / "broken.json").write_text("{not json")
    (folder / "other.py").write_text("print(1)")
    (folder / "other.json").write_text(json.dumps({"name": "not_other", "description": "x"}))
    (folder / "execute.py").write_text("print(1)")
    (folder / "execute.json").write_text(json.dumps({"name": "execute", "description": "x"}))
    (folder / "fancy.py").write_text("print(1)")
    (folder / "fancy.json").write_text(json.dumps({"name": "fancy", "description": "x",
                                                   "parameters": {"oneOf": []}}))
    (folder / "lonely.json").write_text(json.dumps({"name": "lonely", "description": "x"}))
    (folder / "real.py").write_text("print(1)")
    os.symlink("real.py", folder / "linked.py")
    (folder / "linked.json").write_text(json.dumps({"name": "linked", "description": "x"}))
    assert "shout" not in ghost.names()
    await ghost.toolbox.skills.scan()  # what a workspace load runs after the swap
    skill_names = ghost.names() - {"list_files", "read_file", "write_file", "append_file", "delete_file",
                                   "move_file", "search_files", "execute", "scratchpad_set", "scratchpad_get",
                                   "scratchpad_list", "scratchpad_delete", "create_skill", "list_skills",
                                   "delete_skill"}
    assert skill_names == {"shout"}
    assert (await ghost.call("shout", {"text": "hey"})).content == "HEY\n"


async def test_skill_count_is_bounded(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        ghost = await start(tmp_path / "home", stack, skills_max_count=2)
        assert (await ghost.create("one")).ok and (await ghost.create("two")).ok
        third = await ghost.create("three")
        assert not third.ok and "2 skills already" in third.content


async def test_skills_appear_in_the_prompt_summary(ghost: Ghost) -> None:
    assert await ghost.registry.prompt_summary(1000) == ""
    await ghost.create()
    await ghost.call("scratchpad_set", {"key": "goal", "value": "sum things"})
    summary = await ghost.registry.prompt_summary(1000)
    assert "goal: \"sum things\"" in summary and "add(a, b): Add two numbers." in summary
    assert len(await ghost.registry.prompt_summary(50)) <= 50


# --- through a real Ghost: the model makes a skill and uses it in the same turn ----------------

def test_the_model_creates_and_calls_a_skill(upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.script(
        Reply(content="", tool_calls=[{"name": "create_skill", "arguments": {
            "name": "add", "description": "Add two numbers.", "parameters": ADD_PARAMS, "code": ADD_CODE,
            "test_arguments": {"a": 1, "b": 2}}}]),
        Reply(content="", tool_calls=[{"name": "add", "arguments": {"a": 20, "b": 22}}]),
        Reply(content="The sum is 42."))
    with GhostServer("--upstream-url", upstream.url, home=tmp_path / "home") as server:
        def chat() -> httpx.Response:
            return httpx.post(server.url + "/v1/chat/completions", headers=server.headers, timeout=60,
                              json={"model": "fake-model", "messages": [{"role": "user", "content": "add"}]})

        assert chat().json()["choices"][0]["message"]["content"] == "The sum is 42."
        requests = upstream.chat_requests()
        assert "saved" in requests[1]["body"]["messages"][-1]["content"]
        assert requests[2]["body"]["messages"][-1]["content"] == "42\n"
        upstream.script(Reply(content="ok"))
        chat()
        next_turn = upstream.chat_requests()[-1]["body"]
        assert "add" in {t["function"]["name"] for t in next_turn["tools"]}
        assert "add(a, b): Add two numbers." in next_turn["messages"][0]["content"]
