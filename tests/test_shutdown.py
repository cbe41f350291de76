"""SIGTERM: running turns finish within the grace period, new connections are refused, Ghost exits."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest

from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.held_turn import HeldTurn, sigterm
from ghost.testing.server import GhostServer

USER = [{"role": "user", "content": "hi"}]


def test_sigterm_lets_a_running_turn_finish(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> None:
    ghost = GhostServer("--upstream-url", upstream.url, "--shutdown-grace-seconds", "20",
                        home=tmp_path_factory.mktemp("shutdown")).start()
    # The turn's reply is held half-way until the test has seen new connections refused.
    with HeldTurn(ghost, upstream, "shutdown", hold_after=3) as turn:
        sigterm(ghost)
        refused = wait_until_refused(ghost.url + "/api/version", timeout=20)
        assert refused, "Ghost still took new connections after SIGTERM"
        assert turn.running  # ...while the turn was still running
        # The grace timer starts only after uvicorn's own pause that follows the refusal, and it
        # says so in the log: hold the turn until then, and well past it, so that a grace shorter
        # than the hold cuts the turn (a release inside the pause would pass any grace).
        assert wait_for_log(ghost, GRACE_STARTED, timeout=60), ghost.log()
        time.sleep(HOLD_PAST_GRACE_START_S)
        assert turn.running
    turn.finish()
    # uvicorn finishes gracefully, then re-raises the signal so the exit status says SIGTERM.
    assert ghost.process is not None and ghost.process.wait(30) == -signal.SIGTERM
    assert turn.completed, turn.lines
    assert upstream.closed_early == 0


GRACE_STARTED = "Waiting for connections to close"  # uvicorn logs it as the grace timer starts
HOLD_PAST_GRACE_START_S = 2.0  # far past a cut-short grace; far inside the 20 s one this test gives


def wait_for_log(ghost: GhostServer, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout  # a hang guard only
    while time.monotonic() < deadline:
        if text in ghost.log_path.read_text(errors="replace"):
            return True
        time.sleep(0.02)
    return False


def wait_until_refused(url: str, timeout: float) -> bool:
    """Poll until a new connection to `url` is refused; False if it never was within `timeout`."""
    deadline = time.monotonic() + timeout  # a hang guard only: the order is what is checked
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
        except httpx.ConnectError:
            return True
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    return False


def test_grace_period_bounds_a_turn_that_does_not_finish(upstream: FakeUpstream,
                                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    ghost = GhostServer("--upstream-url", upstream.url, "--shutdown-grace-seconds", "1",
                        home=tmp_path_factory.mktemp("shutdown-bound")).start()
    upstream.script(Reply(chunks=[f"w{i}" for i in range(100)], delay=0.5))
    outcome: list[BaseException] = []

    def stream() -> None:
        try:
            httpx.post(ghost.url + "/v1/chat/completions", headers=ghost.headers, timeout=60,
                       json={"model": "fake-model", "messages": USER, "stream": True})
        except httpx.HTTPError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=stream)
    worker.start()
    while not upstream.open_streams:
        time.sleep(0.02)
    assert ghost.process is not None
    sigterm(ghost)
    assert ghost.process.wait(20) == -signal.SIGTERM  # did not wait for the 50 s reply
    worker.join(10)
    # The cut is visible to the client as an incomplete stream, never as a clean end.
    assert outcome and isinstance(outcome[0], httpx.RemoteProtocolError)
    deadline = time.monotonic() + 60
    while upstream.open_streams and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.open_streams == 0  # the cut turn closed its upstream stream


def test_a_test_server_not_ready_in_time_is_stopped_not_left_running(
        upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> None:
    def group_alive(pid: int) -> bool:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return False
        return True

    with GhostServer("--upstream-url", upstream.url, home=tmp_path_factory.mktemp("ready")) as ready:
        assert ready.process is not None and group_alive(ready.process.pid)  # the probe sees a live one
    late = GhostServer("--upstream-url", upstream.url, home=tmp_path_factory.mktemp("late"))
    with pytest.raises(RuntimeError, match="did not become ready"):
        late.start(timeout=0.0)  # no time at all: it cannot have answered yet
    assert late.process is not None and late.process.returncode is not None
    assert not group_alive(late.process.pid)
