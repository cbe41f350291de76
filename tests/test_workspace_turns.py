"""A workspace load against running agent turns, on a real Ghost with the fake upstream."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer


def archive() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("session.json", json.dumps({"chat_history": [], "scratchpad": {}}))
        zf.writestr("sandbox/loaded.txt", "from the archive")
    return buf.getvalue()


@pytest.fixture()
def ghost(request: pytest.FixtureRequest, upstream: FakeUpstream, tmp_path: Path) -> Iterator[GhostServer]:
    wait_s = getattr(request, "param", "30")
    with GhostServer("--upstream-url", upstream.url, "--workspace-wait-s", wait_s, home=tmp_path / "home") as server:
        yield server


def start_turn(ghost: GhostServer, results: list[str]) -> threading.Thread:
    def chat() -> None:
        with httpx.Client(base_url=ghost.url, headers=ghost.headers, timeout=60) as client:
            response = client.post("/v1/chat/completions", json={
                "model": "fake-model", "messages": [{"role": "user", "content": "hi"}]})
            results.append(f"chat {response.status_code}")

    thread = threading.Thread(target=chat)
    thread.start()
    return thread


def start_load(ghost: GhostServer, results: list[httpx.Response]) -> threading.Thread:
    def load() -> None:
        with httpx.Client(base_url=ghost.url, headers=ghost.headers, timeout=60) as client:
            results.append(client.post("/api/workspace/load", content=archive(),
                                       headers={"content-type": "application/zip"}))

    thread = threading.Thread(target=load)
    thread.start()
    return thread


def wait_for_health(client: httpx.Client, ready: Callable[[dict[str, Any]], bool], what: str) -> None:
    deadline = time.monotonic() + 60  # a hang guard only
    while not ready(client.get("/api/health").json()):
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.02)


@pytest.mark.parametrize("ghost", ["1"], indirect=True)
def test_load_during_a_turn_that_outlasts_the_wait_is_409_and_changes_nothing(
        ghost: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="slow answer", hold="slow turn"))  # held until the load gave up
    (ghost.home / "sandbox" / "mine.txt").write_text("mine")
    results: list[str] = []
    with httpx.Client(base_url=ghost.url, headers=ghost.headers, timeout=60) as client:
        turn = start_turn(ghost, results)
        try:
            assert upstream.wait_hold_state("slow turn", "open", timeout=60) == "open"
            response = client.post("/api/workspace/load", content=archive(), headers={"content-type": "application/zip"})
            assert response.status_code == 409, response.text
            assert response.json()["error"]["type"] == "conflict_error"
            assert results == [] and upstream.hold_state("slow turn") == "open"  # the turn still runs
        finally:
            upstream.release("slow turn")
            turn.join(30)
    assert results == ["chat 200"]
    assert sorted(p.name for p in (ghost.home / "sandbox").iterdir()) == ["mine.txt"]
    assert list((ghost.home / ".sandbox.ghost-tmp").iterdir()) == []


def test_load_waits_for_a_running_turn_then_swaps(ghost: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="quick enough", hold="running turn"))
    turns: list[str] = []
    loads: list[httpx.Response] = []
    with httpx.Client(base_url=ghost.url, headers=ghost.headers, timeout=60) as client:
        turn = start_turn(ghost, turns)
        try:
            assert upstream.wait_hold_state("running turn", "open", timeout=60) == "open"
            load = start_load(ghost, loads)
            # Or answered: a load that does not wait is answered at once, and fails below at once.
            wait_for_health(client, lambda health: health["workspace_load_waiting"] or loads, "the load waiting")
            # The load is parked at the gate while the turn runs: nothing swapped, nothing answered.
            assert loads == [] and not (ghost.home / "sandbox" / "loaded.txt").exists()
        finally:
            upstream.release("running turn")
        turn.join(30)
        load.join(30)
    assert turns == ["chat 200"]
    assert loads and loads[0].status_code == 200, loads[0].text if loads else "no answer"
    assert (ghost.home / "sandbox" / "loaded.txt").read_text() == "from the archive"
