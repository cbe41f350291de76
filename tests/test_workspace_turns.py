"""A workspace load against running agent turns, on a real Ghost with the fake upstream."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

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


def start_turn(ghost: GhostServer, results: list[tuple[str, float]]) -> threading.Thread:
    def chat() -> None:
        with httpx.Client(base_url=ghost.url, headers=ghost.headers, timeout=60) as client:
            response = client.post("/v1/chat/completions", json={
                "model": "fake-model", "messages": [{"role": "user", "content": "hi"}]})
            results.append((f"chat {response.status_code}", time.monotonic()))

    thread = threading.Thread(target=chat)
    thread.start()
    return thread


def wait_for_turn(client: httpx.Client) -> None:
    deadline = time.monotonic() + 20
    while client.get("/api/health").json()["in_flight_turns"] == 0:
        assert time.monotonic() < deadline, "the chat turn never started"
        time.sleep(0.02)


@pytest.mark.parametrize("ghost", ["1"], indirect=True)
def test_load_during_a_turn_that_outlasts_the_wait_is_409_and_changes_nothing(
        ghost: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="slow answer", first_delay=4))
    (ghost.home / "sandbox" / "mine.txt").write_text("mine")
    results: list[tuple[str, float]] = []
    with httpx.Client(base_url=ghost.url, headers=ghost.headers, timeout=60) as client:
        turn = start_turn(ghost, results)
        wait_for_turn(client)
        response = client.post("/api/workspace/load", content=archive(), headers={"content-type": "application/zip"})
        assert response.status_code == 409, response.text
        assert response.json()["error"]["type"] == "conflict_error"
        assert results == [], "the turn must still be running when the load gives up"
        turn.join(30)
    assert results[0][0] == "chat 200"
    assert sorted(p.name for p in (ghost.home / "sandbox").iterdir()) == ["mine.txt"]
    assert list((ghost.home / ".sandbox.ghost-tmp").iterdir()) == []


def test_load_waits_for_a_running_turn_then_swaps(ghost: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="quick enough", first_delay=0.5))
    results: list[tuple[str, float]] = []
    with httpx.Client(base_url=ghost.url, headers=ghost.headers, timeout=60) as client:
        turn = start_turn(ghost, results)
        wait_for_turn(client)
        response = client.post("/api/workspace/load", content=archive(), headers={"content-type": "application/zip"})
        loaded_at = time.monotonic()
        turn.join(30)
    assert response.status_code == 200, response.text
    assert results[0][0] == "chat 200"
    assert results[0][1] <= loaded_at, "the load answered before the running turn ended"
    assert (ghost.home / "sandbox" / "loaded.txt").read_text() == "from the archive"
