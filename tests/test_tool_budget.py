"""A tool catalogue of any size fits any window, through a real Ghost on the scripted fake upstream
with a small window (4,096 and 8,192 tokens, llama.cpp's kind: it refuses a prompt that does not fit
and counts tokens for Ghost): Open WebUI's exact tool list (recorded from a real request, see
tests/fixtures/README.md) plus Ghost's own, tools left out and reached through `find_tools`, the
client's tools handed back even when left out, and every request the upstream saw inside its window."""

from __future__ import annotations

import json
from collections.abc import Iterator
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
