"""The sandbox file layer's own threads: blocking file work on the sandbox runs here.

A bounded pool apart from the event loop's default one, so that nothing the sandbox holds (a
huge tree, a slow disk) can starve the threads the rest of the server needs. Sized at start
(`--sandbox-file-threads`); a small default pool serves until then (tests, tools in-process).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
DEFAULT_THREADS = 4

_pool: ThreadPoolExecutor | None = None


def start_pool(threads: int) -> None:
    """Size the pool (at start). Until then a small default pool serves."""
    global _pool
    old, _pool = _pool, ThreadPoolExecutor(threads, thread_name_prefix="ghost-files")
    if old is not None:
        old.shutdown(wait=False)


def stop_pool() -> None:
    global _pool
    old, _pool = _pool, None
    if old is not None:
        old.shutdown(wait=False)


async def run(fn: Callable[..., T], *args: object) -> T:
    """Run blocking file work on the file layer's bounded pool."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(DEFAULT_THREADS, thread_name_prefix="ghost-files")
    return await asyncio.get_running_loop().run_in_executor(_pool, functools.partial(fn, *args))
