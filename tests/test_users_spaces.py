"""Users' workspaces opened on first use, shared by concurrent first requests, closed when idle
and reopened with nothing lost."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from ghost.testing.fake_upstream import FakeUpstream
from ghost.testing.server import GhostServer


@pytest.fixture(scope="module")
def server(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    home = tmp_path_factory.mktemp("spaces-home")
    with GhostServer("--upstream-url", upstream.url, "--workspace-idle-s", "1", home=home) as ghost:
        yield ghost


def open_flags(server: GhostServer) -> dict[str, bool]:
    users = httpx.get(server.url + "/api/users", headers=server.headers, timeout=30).json()["users"]
    return {u["name"]: u["workspace_open"] for u in users}


def test_concurrent_first_requests_open_one_workspace(server: GhostServer) -> None:
    made = httpx.post(server.url + "/api/users", headers=server.headers, json={"name": "fe", "role": "frontend"},
                      timeout=30).json()
    headers = {"X-Ghost-Key": made["key"], "X-OpenWebUI-User-Id": "crowd"}

    def first(_: int) -> int:
        return httpx.get(server.url + "/api/sessions", headers=headers, timeout=120).status_code

    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(first, range(32))) == [200] * 32
    # Opened once, or (this server closes idle ones after a second) again only after a close:
    # never two openings side by side.
    events = [line for line in server.log_path.read_text(errors="replace").splitlines()
              if "opened the workspace of user crowd" in line or "closing the idle workspace of user crowd" in line]
    assert events and "opened" in events[0]
    assert all(("opened" in a) != ("opened" in b) for a, b in zip(events, events[1:])), events
    # The access log names the user acted for (the front end's end user, not the key's holder).
    log = server.log_path.read_text(errors="replace")
    assert '"path": "/api/sessions", "status": 200' in log and '"user": "crowd"' in log


def test_an_idle_workspace_is_closed_and_reopened_with_nothing_lost(server: GhostServer) -> None:
    made = httpx.post(server.url + "/api/users", headers=server.headers, json={"name": "idler"}, timeout=30).json()
    idler = httpx.Client(base_url=server.url, headers={"X-Ghost-Key": made["key"]}, timeout=60)
    assert idler.post("/api/upload", files={"file": ("kept.txt", b"still here")}).status_code == 200
    assert open_flags(server)["idler"] is True
    deadline = time.monotonic() + 120  # a hang guard, not a timing assertion
    while open_flags(server)["idler"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert open_flags(server)["idler"] is False
    assert "closing the idle workspace of user idler" in server.log_path.read_text(errors="replace")
    assert idler.get("/api/download/kept.txt").text == "still here"  # reopened
    assert open_flags(server)["idler"] is True
