"""No path escapes the sandbox through the skill store's own writes.

The skill store writes into `acquired_skills/`, a folder sandboxed code can write to as well. Code
the model runs plants a symlink where the store will write next, pointing at a file outside the
sandbox; creating the skill must not write through it.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer

SKILL = {"name": "shout", "description": "Upper-case a text",
         "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
         "code": "import json, sys\nprint(json.load(sys.stdin)['text'].upper())\n",
         "test_arguments": {"text": "hi"}}


def plant_link(target: Path, name: str) -> str:
    """Sandboxed code that points `acquired_skills/<name>` at `target` (a path it cannot see)."""
    return (f"import os\nos.makedirs('acquired_skills', exist_ok=True)\n"
            f"os.symlink({str(target)!r}, 'acquired_skills/{name}')\n"
            f"print('planted', os.readlink('acquired_skills/{name}'))\n")


def test_create_skill_does_not_write_through_a_planted_link(upstream: FakeUpstream, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    upstream.script(
        Reply(content="", tool_calls=[{"name": "execute", "arguments": {"code": plant_link(outside, ".shout.json.tmp")}}]),
        Reply(content="", tool_calls=[{"name": "create_skill", "arguments": SKILL}]),
        Reply(content="done"))
    with GhostServer("--upstream-url", upstream.url, home=tmp_path / "home") as ghost:
        reply = httpx.post(ghost.url + "/v1/chat/completions", headers=ghost.headers, timeout=120,
                           json={"model": "fake-model", "messages": [{"role": "user", "content": "go"}]})
    assert reply.status_code == 200, reply.text
    requests = upstream.chat_requests()
    # Control: the link really was in place when create_skill ran.
    assert f"planted {outside}" in requests[1]["body"]["messages"][-1]["content"]
    assert len(requests) == 3  # create_skill ran and its result went back to the model
    assert outside.read_text() == "precious"
    assert not outside.is_symlink() and outside.is_file()
