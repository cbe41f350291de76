"""MCP servers from mcp.json run per user: one user's server never reaches another's files.

A server configured with `"workdir": "sandbox"` gets the agent's folder as /sandbox. With users,
each user's workspace starts its own instance, in its own sandbox, bound to that user's folder.
"""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer

TOY = Path(__file__).with_name("mcp_toy_server.py")


@pytest.fixture(scope="module")
def server(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    home = tmp_path_factory.mktemp("users-mcp-home")
    (home / "mcp.json").write_text(json.dumps({"mcpServers": {"toy": {
        "command": sys.executable, "args": ["/sandbox/toy.py"], "workdir": "sandbox"}}}))
    for name in ("sandbox", "workspaces/ann/sandbox", "workspaces/ben/sandbox"):  # each user's copy
        (home / name).mkdir(parents=True)
        shutil.copy(TOY, home / name / "toy.py")
    (home / "workspaces/ann/sandbox/ann-secret.txt").write_text("ann's secret")
    with GhostServer("--upstream-url", upstream.url, home=home) as ghost:
        yield ghost


def client(server: GhostServer, name: str) -> httpx.Client:
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=60) as admin:
        made = admin.post("/api/users", json={"name": name})
        assert made.status_code == 201, made.text
    return httpx.Client(base_url=server.url, headers={"X-Ghost-Key": made.json()["key"]}, timeout=120)


def read_through_mcp(upstream: FakeUpstream, who: httpx.Client, path: str) -> str:
    tag = f"mcp-{uuid.uuid4().hex}"
    upstream.script_for(tag, Reply(content="", tool_calls=[{"name": "toy__read_file", "arguments": {"path": path}}]),
                        Reply(content="done"))
    reply = who.post("/v1/chat/completions", json={"model": "fake-model",
                                                   "messages": [{"role": "user", "content": tag}]})
    assert reply.status_code == 200, reply.text
    last = upstream.chat_requests()[-1]["body"]["messages"][-1]
    assert last["role"] == "tool"
    return last["content"]


def test_each_users_mcp_server_sees_that_users_folder_only(upstream: FakeUpstream, server: GhostServer) -> None:
    ann, ben = client(server, "ann"), client(server, "ben")
    # Positive control: ann's instance reads ann's file.
    assert "READ:ann's secret" in read_through_mcp(upstream, ann, "/sandbox/ann-secret.txt")
    host_path = str(server.home / "workspaces" / "ann" / "sandbox" / "ann-secret.txt")
    for path in ("/sandbox/ann-secret.txt", "/sandbox/../ann/sandbox/ann-secret.txt", host_path):
        seen = read_through_mcp(upstream, ben, path)
        assert "ann's secret" not in seen and "ERROR" in seen, (path, seen)
    # The admin's instance works on the admin's folder, not ann's either.
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=120) as admin:
        assert "ann's secret" not in read_through_mcp(upstream, admin, "/sandbox/ann-secret.txt")
