"""Re-read the MCP config file when it changes (checked every few seconds) or on SIGHUP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from ghost.mcp.config import McpConfig, load_config

log = logging.getLogger("ghost.mcp")
Signature = tuple[int, int, int] | None


def file_signature(path: Path) -> Signature:
    """What changes when the file is edited or replaced; None when it is absent."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


class ConfigWatcher:
    def __init__(self, path: Path, interval: float, apply: Callable[[McpConfig], Awaitable[None]]) -> None:
        self.path = path
        self.interval = interval
        self.apply = apply
        self._signature: Signature = None
        self._hup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._owns_hup = True

    async def load_now(self) -> None:
        self._signature = await asyncio.to_thread(file_signature, self.path)
        await self.apply(await asyncio.to_thread(load_config, self.path))

    def start(self, hup: bool = True) -> None:
        """`hup`: also re-read on SIGHUP (one watcher per process may: the handler is the loop's)."""
        self._owns_hup = hup
        if hup:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._hup.set)
        self._task = asyncio.create_task(self._poll(), name="mcp config watcher")

    async def aclose(self) -> None:
        if self._owns_hup:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})

    async def _poll(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hup.wait(), self.interval)
            hup, changed = self._hup.is_set(), await asyncio.to_thread(file_signature, self.path) != self._signature
            self._hup.clear()
            if hup or changed:
                log.info("mcp: re-reading %s (%s)", self.path, "SIGHUP" if hup else "it changed")
                try:
                    await self.load_now()
                except Exception:  # a reload must never end the watcher
                    log.exception("mcp: applying the new configuration failed")
