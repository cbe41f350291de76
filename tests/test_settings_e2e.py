"""Settings that change what Ghost does, each seen end to end on a real Ghost with the fake upstream:
--upstream-model, --tool-activity none, --sandbox-max-open-files, --sandbox-max-concurrent.
Each test also shows its probe finding the thing it then checks is absent (a positive control)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer

USER = [{"role": "user", "content": "hi"}]


def chat(ghost: GhostServer, path: str = "/v1/chat/completions", **body: object) -> httpx.Response:
    return httpx.post(ghost.url + path, headers=ghost.headers, timeout=120,
                      json={"model": "fake-model", "messages": USER, **body})


def execute(code: str, answer: str = "ran") -> tuple[Reply, Reply]:
    return Reply(content="", tool_calls=[{"name": "execute", "arguments": {"code": code}}]), Reply(content=answer)


def last_tool_result(upstream: FakeUpstream, text: str = "") -> str:
    """The tool result in the last upstream request (of the turn whose user message holds `text`)."""
    requests = [r for r in upstream.chat_requests() if any(
        m.get("role") == "user" and text in (m.get("content") or "") for m in r["body"]["messages"])]
    return requests[-1]["body"]["messages"][-1]["content"]


# --- --upstream-model -------------------------------------------------------------------------------

def test_upstream_model_is_the_name_the_upstream_gets(upstream: FakeUpstream, tmp_path: Path) -> None:
    with GhostServer("--upstream-url", upstream.url, home=tmp_path / "plain") as ghost:
        upstream.script(Reply(content="one"))
        assert chat(ghost).status_code == 200
    assert upstream.chat_requests()[-1]["body"]["model"] == "fake-model"  # control: the client's name
    with GhostServer("--upstream-url", upstream.url, "--upstream-model", "renamed-upstream-model",
                     home=tmp_path / "renamed") as ghost:
        upstream.script(Reply(content="two"))
        reply = chat(ghost)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == "two"
    assert reply.json()["model"] == "fake-model"  # the client still sees the name it asked for
    assert upstream.chat_requests()[-1]["body"]["model"] == "renamed-upstream-model"


# --- --tool-activity none ---------------------------------------------------------------------------

def activity_seen(ghost: GhostServer, upstream: FakeUpstream) -> tuple[str, str, str]:
    """(Ollama thinking, OpenAI reasoning, answers) of two streamed turns that each ran list_files."""
    upstream.script(Reply(content="", tool_calls=[{"name": "list_files", "arguments": {}}]), Reply(content="Listed."),
                    Reply(content="", tool_calls=[{"name": "list_files", "arguments": {}}]), Reply(content="Listed."))
    ollama = [json.loads(line) for line in chat(ghost, "/api/chat").text.splitlines() if line]
    thinking = "".join(line["message"].get("thinking") or "" for line in ollama if "message" in line)
    answers = "".join(line["message"].get("content") or "" for line in ollama if "message" in line)
    sse = chat(ghost, stream=True).text
    chunks = [json.loads(block[len("data: "):]) for block in sse.split("\n\n")
              if block.startswith("data: {")]
    deltas = [c["choices"][0]["delta"] for c in chunks if c.get("choices")]
    reasoning = "".join(d.get("reasoning_content") or d.get("reasoning") or "" for d in deltas)
    answers += "|" + "".join(d.get("content") or "" for d in deltas)
    tool_results = [r["body"]["messages"][-1] for r in upstream.chat_requests() if r["body"]["messages"][-1]["role"] == "tool"]
    assert len(tool_results) == 2  # the tool really ran in both turns
    return thinking, reasoning, answers


def test_tool_activity_none_hides_it_from_both_apis(upstream: FakeUpstream, tmp_path: Path) -> None:
    with GhostServer("--upstream-url", upstream.url, home=tmp_path / "full") as ghost:
        thinking, reasoning, answers = activity_seen(ghost, upstream)
    assert "list_files" in thinking and "list_files" in reasoning  # control: shown by default
    assert answers == "Listed.|Listed."
    upstream.reset()
    with GhostServer("--upstream-url", upstream.url, "--tool-activity", "none", home=tmp_path / "none") as ghost:
        thinking, reasoning, answers = activity_seen(ghost, upstream)
    assert thinking == "" and reasoning == ""
    assert answers == "Listed.|Listed."  # the answer is untouched and the activity never leaks into it


# --- --sandbox-max-open-files -----------------------------------------------------------------------

OPEN_FILES = """import resource
handles = []
try:
    while len(handles) < 10000:
        handles.append(open('/dev/null'))
except OSError as exc:
    print('stopped by', type(exc).__name__, exc.errno)
print('opened', len(handles), 'limit', resource.getrlimit(resource.RLIMIT_NOFILE))
"""


def test_sandbox_max_open_files_bounds_a_run(upstream: FakeUpstream, tmp_path: Path) -> None:
    outside = subprocess.run([sys.executable, "-c", OPEN_FILES], capture_output=True, text=True, timeout=60).stdout
    opened_outside = int(outside.split("opened ")[1].split()[0])
    assert opened_outside > 40  # control: the probe counts more than the limit below when unbounded
    with GhostServer("--upstream-url", upstream.url, "--sandbox-max-open-files", "40", home=tmp_path / "home") as ghost:
        upstream.script(*execute(OPEN_FILES))
        assert chat(ghost).status_code == 200
    result = last_tool_result(upstream)
    assert "stopped by OSError 24" in result  # EMFILE
    assert "limit (40, 40)" in result
    assert int(result.split("opened ")[1].split()[0]) < 40


# --- --sandbox-max-concurrent -----------------------------------------------------------------------

def together_probe(me: str, other: str) -> str:
    """Code that announces itself and looks for the other run for up to 8 s; once it found the
    other, it stays until the other has found it too, so both always see the same."""
    return f"""import os, time
open('{me}.running', 'w').close()
deadline = time.time() + 8
while time.time() < deadline and not os.path.exists('{other}.running'):
    time.sleep(0.02)
together = os.path.exists('{other}.running')
if together:
    open('{me}.saw', 'w').close()
    while time.time() < deadline + 8 and not os.path.exists('{other}.saw'):
        time.sleep(0.02)
print('together' if together else 'alone')
os.remove('{me}.running')
"""


def run_two_at_once(ghost: GhostServer, upstream: FakeUpstream) -> dict[str, str]:
    """Two turns, each running a probe at the same moment; what each probe saw."""
    for me, other in (("one", "two"), ("two", "one")):
        upstream.script_for(f"turn {me}", *execute(together_probe(me, other), f"done {me}"))
    answers: dict[str, str] = {}

    def turn(me: str) -> None:
        reply = httpx.post(ghost.url + "/v1/chat/completions", headers=ghost.headers, timeout=120, json={
            "model": "fake-model", "messages": [{"role": "user", "content": f"turn {me}"}]})
        answers[me] = reply.json()["choices"][0]["message"]["content"]

    threads = [threading.Thread(target=turn, args=(me,)) for me in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert answers == {"one": "done one", "two": "done two"}
    return {me: last_tool_result(upstream, f"turn {me}") for me in ("one", "two")}


@pytest.mark.parametrize("limit", [2, 1])
def test_sandbox_max_concurrent_bounds_runs_at_once(limit: int, upstream: FakeUpstream, tmp_path: Path) -> None:
    with GhostServer("--upstream-url", upstream.url, "--sandbox-max-concurrent", str(limit),
                     "--sandbox-timeout", "60", home=tmp_path / "home") as ghost:
        seen = run_two_at_once(ghost, upstream)
    # With two slots the probes find each other (the probe works); with one, neither ever does.
    expected = "together" if limit == 2 else "alone"
    assert [expected in seen[me] for me in ("one", "two")] == [True, True], seen
