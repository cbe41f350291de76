"""A streaming chat turn that the fake upstream holds half-way, read on a thread of its own: for
tests of what Ghost does while a turn is running (SIGTERM, the grace period, draining)."""

from __future__ import annotations

import signal
import threading
from types import TracebackType

import httpx

from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer

CHUNKS = ("a", "b", "c", "d")


class HeldTurn:
    """`start()` scripts a streamed reply of CHUNKS held after `hold_after` of them and returns once
    the upstream holds it (the turn is then running in Ghost); `release()` lets it finish. Used as
    a context manager, the hold is released on the way out whatever happened, so that a failing
    test never leaves its reader thread waiting."""

    def __init__(self, ghost: GhostServer, upstream: FakeUpstream, hold: str, hold_after: int = 2,
                 timeout: float = 60.0) -> None:
        self.ghost, self.upstream, self.hold = ghost, upstream, hold
        self.hold_after = hold_after
        self.timeout = timeout  # a hang guard for each wait, never what a test checks
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, name=f"held-turn-{hold}", daemon=True)

    def _read(self) -> None:
        body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        with httpx.stream("POST", self.ghost.url + "/v1/chat/completions", headers=self.ghost.headers,
                          timeout=self.timeout, json=body) as response:
            self.lines.extend(response.iter_lines())

    def start(self) -> HeldTurn:
        self.upstream.script(Reply(chunks=list(CHUNKS), hold=self.hold, hold_after=self.hold_after))
        self._reader.start()
        state = self.upstream.wait_hold_state(self.hold, "open", timeout=self.timeout)
        assert state == "open", f"the turn never reached its hold ({state})"
        return self

    @property
    def running(self) -> bool:
        """The upstream still holds the turn's reply: the turn has neither finished nor been cut."""
        return self.upstream.hold_state(self.hold) == "open"

    def release(self) -> None:
        self.upstream.release(self.hold)

    def finish(self) -> str:
        """Release the hold, wait for the reader, and return what the client received."""
        self.release()
        self._reader.join(self.timeout)
        return "\n".join(self.lines)

    @property
    def completed(self) -> bool:
        """The client got the reply's last chunk and the stream's clean end."""
        text = "\n".join(self.lines)
        return f'"content":"{CHUNKS[-1]}"' in text and "data: [DONE]" in text

    def __enter__(self) -> HeldTurn:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.release()


def sigterm(ghost: GhostServer) -> None:
    """Send SIGTERM to a started Ghost (uvicorn's graceful shutdown: refuse, wait, exit)."""
    assert ghost.process is not None, "Ghost was never started"
    ghost.process.send_signal(signal.SIGTERM)
