"""One user's limits: turns at once, turns per minute, and the bytes their sandbox folder holds.

Each user's workspace has its own `UserLimits`, so one user over a limit never slows another.
Over the turn limits: 429 with Retry-After at once (no queueing: the user's own turns are what is
in the way). Over the disk limit: 507 before a turn or an upload starts. The disk usage is
measured by walking the folder (allocated blocks, each inode once) and kept for a few seconds, so a
burst of requests does not walk it again each time; one turn can still write past the limit (up
to the sandbox's per-file and per-run limits) and the next request is refused.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from ghost.errors import Busy, InsufficientStorage, UnsafePath
from ghost.sandbox import fs, fspool, fswalk
from ghost.store.db import Database
from ghost.store.turn_limits import start_turn

WINDOW_S = 60.0
USAGE_TTL_S = 5.0


@dataclass(frozen=True)
class LimitValues:
    max_concurrent_turns: int  # 0: no limit
    turns_per_minute: int  # 0: no limit
    sandbox_bytes: int  # 0: no limit


def sandbox_usage(root: Path, max_depth: int) -> int:
    """Bytes allocated below `root`, each inode counted once; never follows a link (blocking)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    try:
        with fs.open_root(root) as root_fd:
            for node in fswalk.walk(root_fd, max_depth, others=True):
                key = (node.info.st_dev, node.info.st_ino)
                if key not in seen:
                    seen.add(key)
                    total += node.info.st_blocks * 512
    except (OSError, UnsafePath):
        pass  # a folder gone or too deep mid-walk: what was counted stands
    return total


@dataclass(frozen=True)
class SharedTurns:
    """Count the user's turns in the store replicas share, not in this process (docs/scaling.md)."""

    db: Database
    user: Callable[[], str]  # the user's name (read per turn: the space's user object is replaced)


class UserLimits:
    def __init__(self, values: Callable[[], LimitValues], root: Path, max_depth: int,
                 clock: Callable[[], float] = time.monotonic, shared: SharedTurns | None = None) -> None:
        self._values = values  # read on every check: an override set by the admin applies at once
        self._shared = shared
        self._root, self._max_depth, self._clock = root, max_depth, clock
        self.running = 0
        self._starts: deque[float] = deque()
        self._usage: tuple[float, int] | None = None

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold one of the user's turn slots for the turn; Busy (429) if none is free."""
        if self._shared is not None:
            async with self._shared_turn(self._shared):
                yield
            return
        self.admit()
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1

    def admit(self) -> None:
        limits = self._values()
        if limits.max_concurrent_turns and self.running >= limits.max_concurrent_turns:
            raise Busy(f"you already have {self.running} chat turns running (your limit); "
                       "wait for one to finish", headers={"Retry-After": "1"})
        now = self._clock()
        while self._starts and now - self._starts[0] >= WINDOW_S:
            self._starts.popleft()
        if limits.turns_per_minute and len(self._starts) >= limits.turns_per_minute:
            retry = max(1, math.ceil(WINDOW_S - (now - self._starts[0])))
            raise Busy(f"you have started {len(self._starts)} chat turns in the last minute (your limit); "
                       f"try again in {retry}s", headers={"Retry-After": str(retry)})
        self._starts.append(now)

    @asynccontextmanager
    async def _shared_turn(self, shared: SharedTurns) -> AsyncIterator[None]:
        limits, user = self._values(), shared.user()
        slots = shared.db.turn_slot(user, limits.max_concurrent_turns) if limits.max_concurrent_turns \
            else nullcontext(True)
        async with slots as held:
            if not held:
                raise Busy(f"you already have {limits.max_concurrent_turns} chat turns running (your limit); "
                           "wait for one to finish", headers={"Retry-After": "1"})
            if limits.turns_per_minute and (retry := await start_turn(shared.db, user, limits.turns_per_minute)):
                raise Busy(f"you have started {limits.turns_per_minute} chat turns in the last minute (your "
                           f"limit); try again in {retry}s", headers={"Retry-After": str(retry)})
            self.running += 1
            try:
                yield
            finally:
                self.running -= 1

    async def check_disk(self) -> None:
        """InsufficientStorage (507) when the user's sandbox folder holds its limit or more."""
        limit = self._values().sandbox_bytes
        if not limit:
            return
        used = await self.usage()
        if used >= limit:
            raise InsufficientStorage(f"your sandbox folder holds {used:,} bytes, at or over your limit "
                                      f"of {limit:,}; delete files to continue")

    async def usage(self, fresh: bool = False) -> int:
        now = self._clock()
        if fresh or self._usage is None or now - self._usage[0] > USAGE_TTL_S:
            used = await fspool.run(sandbox_usage, self._root, self._max_depth)
            self._usage = (self._clock(), used)
        return self._usage[1]

    def forget_usage(self) -> None:
        self._usage = None


