"""Probes for a load balancer: /api/health/live and /api/health/ready, keyless; draining on SIGTERM."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from ghost.testing.fake_upstream import FakeUpstream
from ghost.testing.held_turn import HeldTurn, sigterm
from ghost.testing.postgres import PostgresServer
from ghost.testing.server import GhostServer


def test_probes_answer_without_a_key(anon: httpx.Client) -> None:
    live = anon.get("/api/health/live")
    assert (live.status_code, live.json()) == (200, {"status": "alive"})
    ready = anon.get("/api/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "checks": {"store": True, "sandbox": True}}


def test_sigterm_drains_ready_first_then_running_turns_finish(
        upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> None:
    ghost = GhostServer("--upstream-url", upstream.url, "--drain-seconds", "4", "--shutdown-grace-seconds", "20",
                        home=tmp_path_factory.mktemp("drain")).start()
    with HeldTurn(ghost, upstream, "drain") as turn:
        assert httpx.get(ghost.url + "/api/health/ready", timeout=10).status_code == 200
        sigterm(ghost)
        # Readiness turns false while Ghost still serves: the listener is open, other requests work.
        states = []
        for _ in range(100):
            answer = httpx.get(ghost.url + "/api/health/ready", timeout=10)
            states.append(answer.status_code)
            if answer.status_code == 503:
                assert answer.json() == {"status": "draining", "checks": {}}
                break
            time.sleep(0.05)
        assert states[-1] == 503, states
        assert httpx.get(ghost.url + "/api/health/live", timeout=10).status_code == 200
        assert httpx.get(ghost.url + "/api/version", timeout=10).status_code == 200
        assert turn.running  # the turn is still running meanwhile
    turn.finish()
    assert ghost.process is not None and ghost.process.wait(60) == -signal.SIGTERM
    assert turn.completed, turn.lines


def test_ready_says_when_the_store_is_down(upstream: FakeUpstream,
                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    server = PostgresServer().start()
    try:
        url = server.create_database("probe")
        with GhostServer("--upstream-url", upstream.url, "--database-url", url,
                         home=tmp_path_factory.mktemp("probe-pg")) as ghost:
            assert httpx.get(ghost.url + "/api/health/ready", timeout=10).status_code == 200
            server.stop()
            down = httpx.get(ghost.url + "/api/health/ready", timeout=30)
            assert down.status_code == 503
            assert down.json() == {"status": "unavailable", "checks": {"store": False, "sandbox": True}}
            # A request that needs the store fails with the documented error, not a 500.
            failed = httpx.get(ghost.url + "/api/sessions", headers=ghost.headers, timeout=30)
            assert failed.status_code == 503 and failed.json()["error"]["type"] == "store_unavailable"
            server.start()
            for _ in range(60):
                if httpx.get(ghost.url + "/api/health/ready", timeout=30).status_code == 200:
                    break
                time.sleep(0.5)
            else:
                raise AssertionError("ready did not recover after the database came back")
            assert httpx.get(ghost.url + "/api/sessions", headers=ghost.headers, timeout=30).status_code == 200
    finally:
        server.remove()
