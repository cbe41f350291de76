"""The file layer's own thread pool (`ghost.sandbox.fspool`): file work never waits for the event
loop's default pool, so whatever fills that pool cannot stop uploads, saves or file tools."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from ghost.sandbox import fspool


def test_file_work_runs_while_the_default_pool_is_busy() -> None:
    release = threading.Event()

    async def main() -> str:
        loop = asyncio.get_running_loop()
        default = ThreadPoolExecutor(1, thread_name_prefix="default")
        loop.set_default_executor(default)
        started = asyncio.Event()
        blocker = loop.run_in_executor(None, lambda: (loop.call_soon_threadsafe(started.set), release.wait(120)))
        await started.wait()  # the default pool's only thread is taken
        try:
            return await asyncio.wait_for(fspool.run(lambda: threading.current_thread().name), 60)
        finally:
            release.set()
            await blocker

    name = asyncio.run(main())
    assert name.startswith("ghost-files"), name
