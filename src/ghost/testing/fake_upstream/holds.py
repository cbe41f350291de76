"""Named holds: a reply that stops where a test wants it to, until the test releases it.

The fake's server runs in a thread of its own, so a hold is a `threading.Event` the test sets, and
the server's side polls it. Each hold's state tells the test where the held reply is: "waiting"
(not requested yet), "open", "finished" or "closed_early" (the client went away).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

Hold = dict[str, Any]  # {"state": str, "released": threading.Event}


class Holds:
    def __init__(self) -> None:
        self.by_name: dict[str, Hold] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Hold:
        with self._lock:
            return self.by_name.setdefault(name, {"state": "waiting", "released": threading.Event()})

    def release(self, name: str) -> None:
        self.get(name)["released"].set()

    def release_all(self) -> None:
        with self._lock:
            holds = list(self.by_name.values())
            self.by_name = {}
        for hold in holds:
            hold["released"].set()

    def state(self, name: str) -> str:
        return self.get(name)["state"]

    def wait_state(self, name: str, *states: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while self.state(name) not in states and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.state(name)


async def wait_released(hold: Hold) -> None:
    """A held chat reply: "open" until released, "closed_early" if Ghost gave up first."""
    hold["state"] = "open"
    try:
        while not hold["released"].is_set():
            await asyncio.sleep(0.01)
    except asyncio.CancelledError:
        hold["state"] = "closed_early"
        raise
    hold["state"] = "finished"


async def held_events(hold: Hold) -> AsyncIterator[bytes]:
    """`/hold/{name}`'s body: one event, then the last one once released."""
    finished = False
    try:
        yield b"data: first\n\n"
        while not hold["released"].is_set():
            await asyncio.sleep(0.01)
        yield b"data: last\n\n"
        finished = True
    finally:
        hold["state"] = "finished" if finished else "closed_early"
