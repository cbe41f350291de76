"""Two Open WebUI accounts in front of one Ghost, with user forwarding on: one workspace each.

A second Open WebUI server runs with accounts (`WEBUI_AUTH=True`) and
`ENABLE_FORWARD_USER_INFO_HEADERS=true`, connected to the suite's Ghost with the key of a
`frontend` user (docs/users.md, "Open WebUI in front") and without the suite's `X-Ghost-Session`
header: the chat id reaches Ghost as Open WebUI's own `X-OpenWebUI-Chat-Id`. Its admin (the first
to sign up) adds a second account; both chat in the browser, the fake upstream scripted to call
Ghost's tools, and what the tools answered is read back from the upstream's record.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import KEY, MODEL, Process, Stack, free_port
from test_open_webui_browser import chat_id, open_chat, send, wait_for

PASSWORD = "e2e-password-0123456789"


class AccountsWebUI:
    """An Open WebUI with accounts on, in front of the stack's Ghost through a frontend key."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.url = f"http://127.0.0.1:{free_port()}"
        created = httpx.post(f"{stack.ghost_url}/api/users", headers={"X-Ghost-Key": KEY},
                             json={"name": "webui", "role": "frontend"}, timeout=10)
        created.raise_for_status()
        self.frontend_key = created.json()["key"]
        env = {**stack.webui_env(), "DATA_DIR": str(stack.root / "webui-accounts-data"), "WEBUI_AUTH": "True",
               "ENABLE_FORWARD_USER_INFO_HEADERS": "true", "BYPASS_MODEL_ACCESS_CONTROL": "true",
               "OLLAMA_API_CONFIGS": json.dumps({"0": {"key": self.frontend_key}}),
               "OPENAI_API_KEYS": self.frontend_key, "OPENAI_API_CONFIGS": json.dumps({"0": {"prefix_id": "oai"}})}
        base = {k: v for k, v in os.environ.items() if not k.startswith(("GHOST_", "OLLAMA_", "OPENAI_"))}
        self.process = Process("open-webui-accounts", [str(Path(sys.executable).with_name("open-webui")), "serve",
                                                       "--host", "127.0.0.1", "--port", self.url.rsplit(":", 1)[1]],
                               {**base, **env}, stack.root)
        stack.processes.append(self.process)  # stopped, and its log kept, with the others

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        response.raise_for_status()
        return response.json()

    def sign_up(self, name: str, email: str) -> dict[str, Any]:
        return self._json(httpx.post(f"{self.url}/api/v1/auths/signup", timeout=30,
                                       json={"name": name, "email": email, "password": PASSWORD}))

    def add(self, admin: dict[str, Any], name: str, email: str) -> dict[str, Any]:
        self._json(httpx.post(f"{self.url}/api/v1/auths/add", timeout=30,
                                headers={"Authorization": f"Bearer {admin['token']}"},
                                json={"name": name, "email": email, "password": PASSWORD, "role": "user"}))
        return self._json(httpx.post(f"{self.url}/api/v1/auths/signin", timeout=30,
                                       json={"email": email, "password": PASSWORD}))

    def ghost_session(self, user_id: str, session_id: str) -> httpx.Response:
        """A session as the front end sees it when acting for `user_id` (its key and Open WebUI's header)."""
        return httpx.get(f"{self.stack.ghost_url}/api/sessions/{session_id}", timeout=10,
                         headers={"X-Ghost-Key": self.frontend_key, "X-OpenWebUI-User-Id": user_id})


@pytest.fixture(scope="module")
def accounts_webui(stack: Stack) -> Iterator[AccountsWebUI]:
    webui = AccountsWebUI(stack)
    webui.process.wait_http(webui.url + "/health")
    yield webui
    webui.process.stop()


def signed_in_page(browser: Any, webui: AccountsWebUI, account: dict[str, Any]) -> Any:
    context = browser.new_context(base_url=webui.url, viewport={"width": 1280, "height": 900})
    # Open WebUI's page keeps the signed-in account's token in localStorage["token"].
    context.add_init_script(f"window.localStorage.setItem('token', {json.dumps(account['token'])});")
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.add_locator_handler(page.get_by_role("button", name="Okay, Let's Go!"), lambda button: button.click())
    return page


def tool_results(stack: Stack, asked: str) -> dict[str, str]:
    """What Ghost's tools answered in the turn the user asked with `asked`, by tool call id."""
    for record in stack.upstream_requests():
        if record["path"] != "/v1/chat/completions":
            continue
        messages = record["body"].get("messages") or []
        users = [m for m in messages if m["role"] == "user"]
        if users and str(users[-1]["content"]).strip() == asked and any(m["role"] == "tool" for m in messages):
            return {m["tool_call_id"]: str(m["content"]) for m in messages if m["role"] == "tool"}
    return {}


def chat_turn(page: Any, stack: Stack, asked: str, calls: list[dict[str, Any]], answer: str) -> None:
    stack.script({"content": "", "tool_calls": calls, "when": asked}, {"content": answer, "when": asked})
    send(page, asked)
    page.get_by_text(answer).wait_for()


def test_two_open_webui_accounts_never_see_each_others_files_or_notes(
        browser: Any, stack: Stack, accounts_webui: AccountsWebUI) -> None:
    stack.reset()
    webui = accounts_webui
    people = {"ann": webui.sign_up("Ann", "ann@example.org")}  # the first account: Open WebUI's admin
    people["ben"] = webui.add(people["ann"], "Ben", "ben@example.org")
    assert people["ann"]["role"] == "admin" and people["ben"]["role"] == "user"
    pages = {name: signed_in_page(browser, webui, account) for name, account in people.items()}
    chats: dict[str, str] = {}
    try:
        for name, page in pages.items():
            open_chat(page, MODEL)
            chat_turn(page, stack, f"{name}: keep my things", [
                {"id": "call_write", "name": "write_file", "arguments": {"path": f"{name}.txt", "content": f"{name}'s secret"}},
                {"id": "call_note", "name": "scratchpad_set", "arguments": {"key": f"{name}-note", "value": f"{name}'s note"}},
            ], f"Kept {name}'s things.")
            chats[name] = chat_id(page)
            results = tool_results(stack, f"{name}: keep my things")
            assert results["call_write"].startswith(f"wrote {name}.txt"), results
            assert results["call_note"] == f"saved '{name}-note'", results

        for name, other in (("ann", "ben"), ("ben", "ann")):
            asked = f"{name}: what do you see?"
            chat_turn(pages[name], stack, asked, [
                {"id": "call_list", "name": "list_files", "arguments": {}},
                {"id": "call_keys", "name": "scratchpad_list", "arguments": {}},
                {"id": "call_mine", "name": "read_file", "arguments": {"path": f"{name}.txt"}},
                {"id": "call_theirs", "name": "read_file", "arguments": {"path": f"{other}.txt"}},
                {"id": "call_their_note", "name": "scratchpad_get", "arguments": {"key": f"{other}-note"}},
            ], f"{name} looked around.")
            results = tool_results(stack, asked)
            # The owner's own file and note are there (the probes find what exists) ...
            assert f"{name}.txt" in results["call_list"] and f"{name}-note" in results["call_keys"], results
            assert f"{name}'s secret" in results["call_mine"], results
            # ... and nothing of the other account's.
            assert f"{other}.txt" not in results["call_list"] and other not in results["call_keys"], results
            assert f"{other}'s secret" not in results["call_theirs"], results
            assert "does not exist" in results["call_theirs"], results
            assert f"{other}'s note" not in results["call_their_note"], results
            assert "no scratchpad entry" in results["call_their_note"], results
    finally:
        for page in pages.values():
            page.context.close()

    # Ghost made one user per account on first sight, with no key, role `user`.
    listed = httpx.get(f"{stack.ghost_url}/api/users", headers={"X-Ghost-Key": KEY}, timeout=10).json()["users"]
    by_name = {user["name"]: user for user in listed}
    for account in people.values():
        assert by_name[account["id"]]["role"] == "user" and by_name[account["id"]]["keys"] == 0, by_name
    # Each Open WebUI chat is a Ghost session of its own account's user, and of no other.
    for name, other in (("ann", "ben"), ("ben", "ann")):
        mine = webui.ghost_session(people[name]["id"], chats[name])
        assert mine.status_code == 200, mine.text
        assert [m["role"] for m in mine.json()["messages"]] == ["user", "assistant"] * 2, mine.text
        assert mine.json()["messages"][0]["content"] == f"{name}: keep my things"
        assert webui.ghost_session(people[other]["id"], chats[name]).status_code == 404
