"""Open WebUI 0.12.4 in headless Chromium, in front of Ghost, over both connection types.

Ollama connection: models `fake-model`, `fake-model-plain`; OpenAI connection: the same with the
prefix `oai.`. Both forward the chat id as `X-Ghost-Session` and use the plain model as Task Model.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from conftest import MODEL, Stack

CONNECTIONS = {"ollama": MODEL, "openai": f"oai.{MODEL}"}
WINDOW = 8192  # the fake upstream's (e2e/upstream.py), which it does not tell Ghost


def open_chat(page: Any, model: str) -> None:
    page.goto(f"/?models={model}")
    page.wait_for_selector("#chat-input")


def send(page: Any, text: str) -> None:
    page.locator("#chat-input").click()
    page.keyboard.type(text)
    page.keyboard.press("Enter")


def chat_id(page: Any) -> str:
    page.wait_for_url("**/c/*")
    return page.url.rsplit("/c/", 1)[1].split("?")[0]


def wait_for(check: Any, what: str, timeout: float = 60.0) -> Any:
    """Poll `check` until it returns something truthy (a hang guard, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.25)
    raise AssertionError(f"gave up waiting for {what}")


def tasks_done(stack: Stack) -> bool:
    """Open WebUI's title, tags and follow-up tasks have reached the upstream."""
    bodies = [r["body"] for r in stack.upstream_requests() if r["path"] == "/v1/chat/completions"]
    return sum(str(b["messages"][-1]["content"]).startswith("### Task:") for b in bodies) >= 3


def last_user_text(body: dict[str, Any]) -> str:
    return str([m for m in body["messages"] if m["role"] == "user"][-1]["content"]).strip()


def roles_and_text(session: dict[str, Any] | None) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in (session or {}).get("messages", [])]


@pytest.mark.parametrize("connection", CONNECTIONS)
def test_hello_and_the_session_equals_the_chat_after_the_tasks(page: Any, stack: Stack, connection: str) -> None:
    stack.script({"content": f"Hello over {connection}.", "when": "hi there"})
    open_chat(page, CONNECTIONS[connection])
    send(page, "hi there")
    page.get_by_text(f"Hello over {connection}.").wait_for()
    chat = chat_id(page)
    wait_for(lambda: tasks_done(stack), "the background tasks")
    session = wait_for(lambda: stack.session(chat), "the stored session")
    assert roles_and_text(session) == [("user", "hi there"), ("assistant", f"Hello over {connection}.")]
    for task in [r["body"] for r in stack.upstream_requests()
                 if r["path"] == "/v1/chat/completions" and "### Task:" in str(r["body"]["messages"][-1]["content"])]:
        assert "tools" not in task and task["messages"][0]["role"] == "user"  # the plain model: no agent


@pytest.mark.parametrize("connection", CONNECTIONS)
def test_hello_with_open_webuis_tools_on_an_8192_token_upstream(page: Any, stack: Stack, connection: str) -> None:
    # Open WebUI's defaults: its 36 built-in tools go with every chat; the upstream does not tell its
    # window, so Ghost assumes 8,192 tokens. Ghost fits the tools to their budget: "hello" is answered.
    stack.script({"content": f"Hi from {connection}!", "when": "hello"})
    open_chat(page, CONNECTIONS[connection])
    send(page, "hello")
    page.get_by_text(f"Hi from {connection}!").wait_for()
    chats = [r for r in stack.upstream_requests() if r["path"] == "/v1/chat/completions"]
    turn = next(r["body"] for r in chats if last_user_text(r["body"]) == "hello" and r["body"].get("tools"))
    offered = [t["function"]["name"] for t in turn["tools"]]
    assert "find_tools" in offered and "delete_skill" in offered  # some left out, reachable through find_tools
    assert any(name in offered for name in ("get_current_timestamp", "search_notes", "search_memories"))
    assert all(r["tokens"] <= WINDOW for r in chats), [r["tokens"] for r in chats]


def test_a_tool_turn_then_a_second_turn(page: Any, stack: Stack) -> None:
    stack.script({"content": "", "tool_calls": [{"name": "execute", "arguments": {"code": "print(6 * 7)"}}],
                  "when": "compute 6 times 7"}, {"content": "The sandbox says 42.", "when": "compute 6 times 7"},
                 {"content": "Second answer.", "when": "and again?"})
    open_chat(page, MODEL)
    send(page, "compute 6 times 7")
    page.get_by_text("The sandbox says 42.").wait_for()
    page.get_by_text("Thought for", exact=False).first.wait_for()  # the tool activity, folded
    assert "→ execute" not in page.locator("#response-content-container").last.inner_text()
    send(page, "and again?")
    page.get_by_text("Second answer.").wait_for()
    chat = chat_id(page)
    session = wait_for(lambda: len(roles_and_text(stack.session(chat))) == 4 and stack.session(chat), "turn two")
    assert [role for role, _ in roles_and_text(session)] == ["user", "assistant", "user", "assistant"]
    assert roles_and_text(session)[-1] == ("assistant", "Second answer.")


@pytest.mark.parametrize("connection", CONNECTIONS)
def test_an_upstream_error_is_readable(page: Any, stack: Stack, connection: str) -> None:
    stack.script({"status": 500, "when": "this will fail"})
    open_chat(page, CONNECTIONS[connection])
    send(page, "this will fail")
    page.get_by_text("upstream answered 500", exact=False).first.wait_for()


def test_ghosts_create_skill_is_reachable_with_open_webuis_tools_on(page: Any, stack: Stack) -> None:
    skill = {"name": "triple", "description": "Triple a number.",
             "code": "import json, sys\nprint(json.load(sys.stdin)['n'] * 3)\n",
             "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
             "test_arguments": {"n": 2}}
    asked = "make a skill that triples"
    stack.script({"content": "", "tool_calls": [{"name": "create_skill", "arguments": skill}], "when": asked},
                 {"content": "Skill triple is ready.", "when": asked})
    open_chat(page, MODEL)
    send(page, asked)
    page.get_by_text("Skill triple is ready.").wait_for()
    chats = [r["body"] for r in stack.upstream_requests() if r["path"] == "/v1/chat/completions"
             and last_user_text(r["body"]) == asked]  # not the tasks, which quote the chat
    offered = [t["function"]["name"] for t in chats[0]["tools"]]
    assert "create_skill" in offered and len(offered) == len(set(offered))
    tool_result = chats[1]["messages"][-1]
    assert tool_result["role"] == "tool" and "saved" in tool_result["content"]  # Ghost's create_skill ran


@pytest.mark.parametrize("connection", CONNECTIONS)
def test_regenerate_replaces_the_answer_in_the_ui_and_in_the_session(page: Any, stack: Stack, connection: str) -> None:
    asked = "tell me a joke"
    stack.script({"content": "The first joke.", "when": asked}, {"content": "The second joke.", "when": asked})
    open_chat(page, CONNECTIONS[connection])
    send(page, asked)
    page.get_by_text("The first joke.").wait_for()
    chat = chat_id(page)
    wait_for(lambda: roles_and_text(stack.session(chat)) == [("user", asked), ("assistant", "The first joke.")],
             "the first answer stored")
    page.get_by_role("button", name="Regenerate").last.click()
    page.get_by_text("Try Again").click()  # Open WebUI's regenerate menu
    page.get_by_text("The second joke.").wait_for()
    page.get_by_text("The first joke.").wait_for(state="detached")  # replaced, not added below
    wait_for(lambda: roles_and_text(stack.session(chat)) == [("user", asked), ("assistant", "The second joke.")],
             "the stored answer replaced")


@pytest.mark.parametrize("connection", CONNECTIONS)
def test_stop_mid_stream_makes_ghost_close_the_upstream(page: Any, stack: Stack, connection: str) -> None:
    asked, hold = "count slowly", f"stop-{connection}"
    # Streams "One two", then holds the rest until released: only Ghost hanging up ends it early.
    stack.script({"content": "One two three four", "hold": hold, "hold_after": 3, "when": asked},
                 {"content": "Still here.", "when": "still there?"})
    open_chat(page, CONNECTIONS[connection])
    send(page, asked)
    page.get_by_text("One two").wait_for()
    wait_for(lambda: stack.hold_state(hold) == "open", "the upstream stream held open")
    page.get_by_role("button", name="Stop").click()
    wait_for(lambda: stack.hold_state(hold) == "closed_early", "Ghost closing the upstream stream")
    assert "three" not in page.locator("#response-content-container").last.inner_text()
    send(page, "still there?")  # the chat goes on after a stop
    page.get_by_text("Still here.").wait_for()
    chat = chat_id(page)
    session = wait_for(lambda: (s := stack.session(chat)) and roles_and_text(s)[-1] == ("assistant", "Still here.") and s,
                       "the turn after the stop stored")
    assert [role for role, _ in roles_and_text(session)][-2:] == ["user", "assistant"]
    assert roles_and_text(session)[0] == ("user", asked)


@pytest.mark.parametrize("connection", CONNECTIONS)
def test_an_upstream_error_mid_stream_is_readable(page: Any, stack: Stack, connection: str) -> None:
    asked = "this breaks half way"
    stack.script({"content": "Partial answer before the break and more", "fail_after": 4, "when": asked})
    open_chat(page, CONNECTIONS[connection])
    send(page, asked)
    page.get_by_text("Partial answer before", exact=False).first.wait_for()
    page.get_by_text("upstream", exact=False).first.wait_for()
