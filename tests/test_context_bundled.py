"""The context window with the real bundled model: a conversation far longer than its window."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from ghost.llm.embedded import bundled_model_file, server_installed
from ghost.testing.server import GhostServer

pytestmark = pytest.mark.skipif(not server_installed() or bundled_model_file() is None,
                                reason="the bundled model is not installed")
TURNS = 40


@pytest.mark.timeout(3000)
def test_forty_turns_in_a_small_window_all_get_answers(tmp_path: Path) -> None:
    # A 1,024-token window: after a few turns the history no longer fits, so Ghost has to fold it
    # into summaries the model writes itself (tool rounds off: this is about the window, not tools).
    with GhostServer("--embedded-context-size", "1024", "--embedded-tool-rounds", "0", home=tmp_path,
                     ) as ghost:
        window = httpx.get(ghost.url + "/api/health", headers=ghost.headers, timeout=60).json()["context_window"]
        history: list[dict[str, str]] = []
        answers = []
        for turn in range(TURNS):
            history.append({"role": "user", "content": f"Message {turn}: my favourite number today is {turn * 7}. "
                            "Please say something short and friendly about it."})
            response = httpx.post(ghost.url + "/v1/chat/completions", headers=ghost.headers, timeout=600,
                                  json={"messages": history, "max_tokens": 12, "session_id": "long"})
            assert response.status_code == 200, response.text
            answers.append(response.json()["choices"][0]["message"]["content"] or "")
            history.append({"role": "assistant", "content": answers[-1]})
        session = httpx.get(ghost.url + "/api/sessions/long", headers=ghost.headers, timeout=60).json()
        made = httpx.get(ghost.url + "/api/health", headers=ghost.headers, timeout=60).json()["context_window"]
    assert (window["tokens"], window["upstream"], window["tokenizer"]) == (1024, "bundled", "/extras/tokenize/count")
    assert all(answer.strip() for answer in answers), answers
    assert session["summary"] is not None and session["summary"]["messages"] >= 10
    assert 1 <= made["summaries_made"] < TURNS // 2


@pytest.mark.timeout(1800)
def test_hello_with_open_webuis_tool_list_is_answered_by_the_bundled_model(tmp_path: Path) -> None:
    # Open WebUI's 36 built-in tools (recorded, tests/fixtures) plus Ghost's 15, on the bundled
    # model's default window: the tools are fitted to their budget and "hello" gets an answer.
    tools = json.loads((Path(__file__).with_name("fixtures") / "open_webui_tools.json").read_text())
    with GhostServer(home=tmp_path) as ghost:
        response = httpx.post(ghost.url + "/v1/chat/completions", headers=ghost.headers, timeout=900,
                              json={"messages": [{"role": "user", "content": "hello"}], "tools": tools,
                                    "max_tokens": 24})
        report = httpx.get(ghost.url + "/api/health", headers=ghost.headers, timeout=60).json()["context_window"]
    assert response.status_code == 200, response.text
    message = response.json()["choices"][0]["message"]
    assert (message.get("content") or "").strip() or message.get("tool_calls")
    assert report["upstream"] == "bundled" and report["tools_last_turn"]["tokens_sent"] <= report["tools_last_turn"]["budget_tokens"]
