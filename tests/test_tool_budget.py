"""A tool catalogue of any size fits any window, through a real Ghost on the scripted fake upstream
with a small window (4,096 and 8,192 tokens, llama.cpp's kind: it refuses a prompt that does not fit
and counts tokens for Ghost): Open WebUI's exact tool list (recorded from a real request, see
tests/fixtures/README.md) plus Ghost's own, tools left out and reached through `find_tools`, the
client's tools handed back even when left out, and every request the upstream saw inside its window."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ghost.testing.fake_upstream import ContextWindow, FakeUpstream, Reply
from ghost.testing.server import GhostServer

FIXTURES = Path(__file__).with_name("fixtures")
OWUI_TOOLS: list[dict[str, Any]] = json.loads((FIXTURES / "open_webui_tools.json").read_text())
HELLO = {"role": "user", "content": "hello"}
MANY_TOOLS_SERVER = Path(__file__).with_name("mcp_many_tools_server.py")


@dataclass
class Stack:
    fake: FakeUpstream
    ghost: GhostServer
    window: int

    def fresh(self) -> None:
        self.fake.reset()
        self.fake.context = ContextWindow(self.window, "llama.cpp")

    def chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, **extra: Any) -> httpx.Response:
        body: dict[str, Any] = {"model": "fake-model", "messages": messages, "stream": False, **extra}
        if tools is not None:
            body["tools"] = tools
        return httpx.post(self.ghost.url + "/v1/chat/completions", headers=self.ghost.headers, json=body, timeout=120)

    def turns(self) -> list[dict[str, Any]]:
        return [r for r in self.fake.chat_requests()]

    def assert_all_fit(self) -> None:
        requests = self.turns()
        assert requests, "the upstream saw no request"
        for record in requests:
            assert record["tokens"] <= self.window, f"{record['tokens']} tokens sent to a {self.window}-token window"

    def health(self) -> dict[str, Any]:
        return httpx.get(self.ghost.url + "/api/health", headers=self.ghost.headers, timeout=30).json()


def names(tools: list[dict[str, Any]]) -> list[str]:
    return [t["function"]["name"] for t in tools]


def ghost_tool_names(stack: Stack) -> list[str]:
    """Ghost's own tools, as offered on a roomy call (no client tools)."""
    stack.fresh()
    stack.fake.script(Reply(content="hi"))
    assert stack.chat([HELLO]).status_code == 200
    return names(stack.turns()[0]["body"]["tools"])


@pytest.fixture(scope="module", params=[4096, 8192], ids=["4k", "8k"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    fake = FakeUpstream().start()
    fake.context = ContextWindow(request.param, "llama.cpp")
    try:
        with GhostServer("--upstream-url", fake.url, home=tmp_path_factory.mktemp("toolbudget")) as ghost:
            yield Stack(fake, ghost, request.param)
    finally:
        fake.stop()


def test_the_recorded_open_webui_list_is_big_enough_to_matter() -> None:
    # The fixture is what Open WebUI 0.12.4 sent with native tool calling on (its built-in tools).
    assert len(OWUI_TOOLS) >= 30 and len(json.dumps(OWUI_TOOLS)) > 20_000
    assert "create_skill" in names(OWUI_TOOLS)  # the clash with Ghost's own tool is in it too


def test_hello_with_open_webuis_tools_is_answered_within_the_window(stack: Stack) -> None:
    stack.fresh()
    stack.fake.script(Reply(content="Hello there!"))
    response = stack.chat([HELLO], OWUI_TOOLS)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "Hello there!"
    stack.assert_all_fit()
    sent = stack.turns()[0]["body"]["tools"]
    offered = names(sent)
    every = len(OWUI_TOOLS) + 15
    # 51 schemas (about 8,300 tokens) against a tool budget of 40% of the window: some are left out
    assert len(offered) < every and "find_tools" in offered and "delete_skill" in offered
    # compacted: no parameter descriptions left
    assert all("description" not in spec for t in sent for spec in (t["function"]["parameters"].get("properties") or {}).values())
    report = stack.health()["context_window"]["tools_last_turn"]
    assert report["left_out_count"] == every - (len(offered) - 1) and report["compacted"] is True
    assert report["left_out"] and all("find_tools" in item["reason"] for item in report["left_out"])
    assert report["tokens_sent"] <= report["budget_tokens"] < report["tokens_uncompacted"]


def test_a_dropped_client_tool_is_found_and_its_call_goes_back_to_the_client(stack: Stack) -> None:
    stack.fresh()
    stack.fake.script(Reply(content="hi"))
    assert stack.chat([HELLO], OWUI_TOOLS).status_code == 200
    offered = set(names(stack.turns()[0]["body"]["tools"]))
    dropped = [n for n in names(OWUI_TOOLS) if n not in offered and n != "create_skill"]
    assert dropped, "nothing was left out: the test would prove nothing"
    target = dropped[-1]
    stack.fresh()
    asked = {"role": "user", "content": "please do the thing"}
    stack.fake.script(Reply(content="", tool_calls=[{"name": "find_tools", "arguments": {"query": target}}]),
                      Reply(content="", tool_calls=[{"name": target, "arguments": {}}]))
    response = stack.chat([asked], OWUI_TOOLS)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert [c["function"]["name"] for c in choice["message"]["tool_calls"]] == [target]  # the client's name
    first, second = stack.turns()
    assert target not in names(first["body"]["tools"]) and target in names(second["body"]["tools"])
    found = json.loads(second["body"]["messages"][-1]["content"])
    assert target in [t["name"] for t in found["tools"]]
    stack.assert_all_fit()


def test_a_client_tool_left_out_is_still_handed_back_when_the_model_calls_it(stack: Stack) -> None:
    stack.fresh()
    stack.fake.script(Reply(content="hi"))
    assert stack.chat([HELLO], OWUI_TOOLS).status_code == 200
    offered = set(names(stack.turns()[0]["body"]["tools"]))
    dropped = [n for n in names(OWUI_TOOLS) if n not in offered and n != "create_skill"]
    assert dropped
    stack.fresh()
    stack.fake.script(Reply(content="", tool_calls=[{"name": dropped[0], "arguments": {}}]))
    response = stack.chat([HELLO], OWUI_TOOLS)
    message = response.json()["choices"][0]["message"]
    assert [c["function"]["name"] for c in message["tool_calls"]] == [dropped[0]]
    assert len(stack.turns()) == 1  # handed back, not run by Ghost


def test_a_tool_named_by_tool_choice_is_always_offered(stack: Stack) -> None:
    stack.fresh()
    stack.fake.script(Reply(content="hi"))
    assert stack.chat([HELLO], OWUI_TOOLS).status_code == 200
    offered = set(names(stack.turns()[0]["body"]["tools"]))
    dropped = [n for n in names(OWUI_TOOLS) if n not in offered and n != "create_skill"]
    assert dropped
    stack.fresh()
    stack.fake.script(Reply(content="", tool_calls=[{"name": dropped[-1], "arguments": {}}]))
    choice = {"type": "function", "function": {"name": dropped[-1]}}
    assert stack.chat([HELLO], OWUI_TOOLS, tool_choice=choice).status_code == 200
    body = stack.turns()[0]["body"]
    assert dropped[-1] in names(body["tools"]) and body["tool_choice"] == choice


def test_a_dropped_ghost_tool_runs_through_find_tools(stack: Stack) -> None:
    # A message about Open WebUI's calendar, automations, notes, memories and knowledge: its tools
    # rank first, and the last of Ghost's own (relevant to none of these words) are left out.
    asked = {"role": "user", "content": "check my calendar events, automations and tasks, the timestamp, "
                                        "search my notes, memories, chats and knowledge files, then view them"}
    stack.fresh()
    stack.fake.script(
        Reply(content="", tool_calls=[{"name": "find_tools", "arguments": {"query": "list my acquired skills"}}]),
        Reply(content="", tool_calls=[{"name": "list_skills", "arguments": {}}]),
        Reply(content="Done."))
    response = stack.chat([asked], OWUI_TOOLS)
    assert response.json()["choices"][0]["message"]["content"] == "Done."
    first, second, third = (r["body"] for r in stack.turns())
    assert "list_skills" not in names(first["tools"])
    assert "list_skills" in names(second["tools"]) and "list_skills" in names(third["tools"])
    result = third["messages"][-1]
    assert result["role"] == "tool" and "no skills yet" in result["content"]  # Ghost ran it
    stack.assert_all_fit()


def test_a_message_that_alone_cannot_fit_names_the_message(stack: Stack) -> None:
    stack.fresh()
    huge = "word " * (stack.window * 2)
    response = stack.chat([{"role": "user", "content": huge}], OWUI_TOOLS)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "context_length_exceeded"
    assert error["message"].startswith("the newest message") and "tools are not the cause" in error["message"]
    assert stack.fake.chat_requests() == []


def test_a_system_prompt_that_cannot_fit_names_the_system_prompt(stack: Stack) -> None:
    stack.fresh()
    system = {"role": "system", "content": "rule. " * (stack.window * 2)}
    response = stack.chat([system, HELLO], OWUI_TOOLS)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("the system prompt")


# --- floods: skills written by sandboxed code, and an MCP server with 200 tools -------------------

FLOOD_CODE = """
import json, os
os.makedirs("acquired_skills", exist_ok=True)
for n in range({count}):
    name = f"flood_{{n}}"
    props = {{f"p{{i}}": {{"type": "string", "description": "x" * {width}}} for i in range({props})}}
    sidecar = {{"name": name, "description": "A skill that does nothing useful.",
               "parameters": {{"type": "object", "properties": props}}}}
    with open(f"acquired_skills/{{name}}.json", "w") as f:
        json.dump(sidecar, f)
    with open(f"acquired_skills/{{name}}.py", "w") as f:
        f.write("print('ok')\\n")
print(sorted(os.listdir("acquired_skills"))[:3], len(os.listdir("acquired_skills")))
"""


def flood(stack: Stack, *, count: int, width: int, props: int) -> None:
    """The model runs code in the sandbox that writes `count` skills straight into acquired_skills/."""
    stack.fresh()
    code = FLOOD_CODE.format(count=count, width=width, props=props)
    stack.fake.script(Reply(content="", tool_calls=[{"name": "execute", "arguments": {"code": code}}]),
                      Reply(content="written"))
    response = stack.chat([{"role": "user", "content": "write files"}])
    assert response.json()["choices"][0]["message"]["content"] == "written"
    assert f"] {2 * count}" in stack.turns()[1]["body"]["messages"][-1]["content"]  # the files are there


def hello_works(stack: Stack, client_tools: list[dict[str, Any]] | None = OWUI_TOOLS) -> dict[str, Any]:
    stack.fresh()
    stack.fake.script(Reply(content="hi!"))
    response = stack.chat([HELLO], client_tools)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "hi!"
    stack.assert_all_fit()
    return stack.turns()[0]["body"]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeUpstream, Path]]:
    fake = FakeUpstream().start()
    fake.context = ContextWindow(4096, "llama.cpp")
    yield fake, tmp_path_factory.mktemp("flood")
    fake.stop()


def test_a_skill_flood_of_60_kb_schemas_survives_a_restart_and_a_workspace_load(small: tuple[FakeUpstream, Path]) -> None:
    fake, home = small
    with GhostServer("--upstream-url", fake.url, home=home) as ghost:
        stack = Stack(fake, ghost, 4096)
        # 10 skills, a 60 KB schema each: every sidecar passes the 64 KB sidecar check
        flood(stack, count=10, width=1500, props=40)
        saved = httpx.post(ghost.url + "/api/workspace/save", headers=ghost.headers, timeout=120)
        assert saved.status_code == 200
    sizes = [(home / "sandbox" / "acquired_skills" / f"flood_{n}.json").stat().st_size for n in range(10)]
    assert all(55_000 < size < 64 * 1024 for size in sizes)
    with GhostServer("--upstream-url", fake.url, home=home) as ghost:  # the restart
        stack = Stack(fake, ghost, 4096)
        skills = stack.health()["skills"]
        skipped = {s["name"]: s["reason"] for s in skills["skipped"]}
        assert skills["loaded"] == 0 and len(skipped) == 10
        assert all("--skill-schema-max-chars" in reason for reason in skipped.values())
        sent = hello_works(stack)
        assert not any(n.startswith("flood_") for n in names(sent["tools"]))
        # the model can still delete them (a skipped skill too)
        stack.fresh()
        stack.fake.script(Reply(content="", tool_calls=[{"name": "delete_skill", "arguments": {"name": "flood_0"}}]),
                          Reply(content="deleted"))
        assert stack.chat([{"role": "user", "content": "delete flood_0"}]).json()["choices"][0]["message"]["content"] == "deleted"
        assert "deleted skill 'flood_0'" in stack.turns()[1]["body"]["messages"][-1]["content"]
        assert not (home / "sandbox" / "acquired_skills" / "flood_0.json").exists()
        # a workspace load (the archive saved with the flood in it) brings them back: still no lock-out
        loaded = httpx.post(ghost.url + "/api/workspace/load", headers={**ghost.headers, "Content-Type": "application/zip"},
                            content=saved.content, timeout=120)
        assert loaded.status_code == 200, loaded.text
        assert len(stack.health()["skills"]["skipped"]) == 10
        hello_works(stack)


def test_a_flood_of_skills_under_the_cap_is_left_out_least_recently_used_first(small: tuple[FakeUpstream, Path]) -> None:
    fake, home = small
    fresh_home = home.parent / (home.name + "-under")
    with GhostServer("--upstream-url", fake.url, home=fresh_home) as ghost:
        stack = Stack(fake, ghost, 4096)
        # 10 skills of about 3.3 KB of schema each: each passes the cap, together ~8,000 tokens
        flood(stack, count=10, width=80, props=25)
    with GhostServer("--upstream-url", fake.url, home=fresh_home) as ghost:
        stack = Stack(fake, ghost, 4096)
        assert stack.health()["skills"]["loaded"] == 10
        # flood_3 used just now: when skills are left out, it is not among them
        stack.fresh()
        stack.fake.script(Reply(content="", tool_calls=[{"name": "flood_3", "arguments": {}}]), Reply(content="ran"))
        assert stack.chat([HELLO]).json()["choices"][0]["message"]["content"] == "ran"
        assert stack.turns()[1]["body"]["messages"][-1]["content"].strip() == "ok"  # the skill ran
        sent = hello_works(stack, None)
        offered = names(sent["tools"])
        assert "delete_skill" in offered and "find_tools" in offered
        left = {item["name"] for item in stack.health()["context_window"]["tools_last_turn"]["left_out"]}
        assert {f"flood_{n}" for n in range(10)} - {"flood_3"} <= left | set(offered)
        assert "flood_3" in offered  # the most recently used skill came first
        assert any(f"flood_{n}" in left for n in range(10))



def test_two_hundred_mcp_tools_and_open_webuis_fit_and_one_is_reached_through_find_tools(
        small: tuple[FakeUpstream, Path]) -> None:
    fake, base = small
    home = base.parent / (base.name + "-mcp")
    servers = {}
    for name in ("many_a", "many_b"):  # 100 tools each: under the default --mcp-max-tools of one server
        directory = home / "mcp" / name
        directory.mkdir(parents=True)
        shutil.copy(MANY_TOOLS_SERVER, directory / "many.py")
        servers[name] = {"command": sys.executable, "args": ["/sandbox/many.py", "100"]}
    (home / "mcp.json").write_text(json.dumps({"mcpServers": servers}))
    with GhostServer("--upstream-url", fake.url, "--mcp-start-timeout", "120", home=home) as ghost:
        stack = Stack(fake, ghost, 4096)
        wait_until(lambda: all(s["state"] == "ready" for s in stack.health()["mcp"]["servers"])
                   and len(stack.health()["mcp"]["servers"]) == 2, "both MCP servers ready")
        sent = hello_works(stack)
        report = stack.health()["context_window"]["tools_last_turn"]
        assert report["left_out_count"] >= 200 and report["tokens_uncompacted"] > 4 * 4096
        mcp_offered = [n for n in names(sent["tools"]) if n.startswith("many_")]
        target = "many_b__tool_057"
        assert target not in mcp_offered
        stack.fresh()
        stack.fake.script(
            Reply(content="", tool_calls=[{"name": "find_tools", "arguments": {"query": "tool_057 payroll records"}}]),
            Reply(content="", tool_calls=[{"name": target, "arguments": {"text": "march"}}]),
            Reply(content="found it"))
        response = stack.chat([{"role": "user", "content": "look up payroll for march"}], OWUI_TOOLS)
        assert response.json()["choices"][0]["message"]["content"] == "found it"
        calls = stack.turns()
        found = json.loads(calls[1]["body"]["messages"][-1]["content"])
        assert target in [t["name"] for t in found["tools"]] and target in names(calls[1]["body"]["tools"])
        assert "tool_057: march" in calls[2]["body"]["messages"][-1]["content"]  # the MCP server answered
        stack.assert_all_fit()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout  # a hang guard, not a timing assertion
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
