"""Probes for a load balancer: /api/health/live and /api/health/ready, keyless; draining on SIGTERM."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest

from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.postgres import PostgresServer
from ghost.testing.server import GhostServer

USER = [{"role": "user", "content": "hi"}]


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
    upstream.script(Reply(chunks=["a", "b", "c", "d"], hold="drain", hold_after=2))
    received: list[str] = []

    def stream() -> None:
        with httpx.stream("POST", ghost.url + "/v1/chat/completions", headers=ghost.headers, timeout=60,
                          json={"model": "fake-model", "messages": USER, "stream": True}) as response:
            received.extend(response.iter_lines())

    worker = threading.Thread(target=stream)
    worker.start()
    try:
        assert upstream.wait_hold_state("drain", "open", timeout=30) == "open"
        assert ghost.process is not None
        assert httpx.get(ghost.url + "/api/health/ready", timeout=10).status_code == 200
        ghost.process.send_signal(signal.SIGTERM)
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
        assert upstream.hold_state("drain") == "open"  # the turn is still running meanwhile
    finally:
        upstream.release("drain")
    worker.join(60)
    assert ghost.process.wait(60) == -signal.SIGTERM
    text = "\n".join(received)
    assert '"content":"d"' in text and "data: [DONE]" in text


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
