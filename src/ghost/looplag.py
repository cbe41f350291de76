"""Measure event-loop lag: how late a timer fires. A busy or blocked loop shows up here first."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

INTERVAL_S = 0.1
WINDOW = 600  # samples: one minute at the interval above


class LoopLagMonitor:
    def __init__(self) -> None:
        self.samples: deque[float] = deque(maxlen=WINDOW)
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ghost-loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(INTERVAL_S)
            lag = max(0.0, time.perf_counter() - started - INTERVAL_S)
            self.samples.append(lag)
            self.worst = max(self.worst, lag)

    def report(self) -> dict[str, float]:
        ordered = sorted(self.samples) or [0.0]

        def pct(p: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 2)

        return {"p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": round(max(ordered) * 1000, 2),
                "worst_since_start_ms": round(self.worst * 1000, 2)}
