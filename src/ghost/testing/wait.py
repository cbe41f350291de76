"""Waiting in tests for something another process does: poll until it holds (a hang guard, never
a timing assertion)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def until(check: Callable[[], T], what: str, timeout: float = 60.0, every: float = 0.1) -> T:
    """`check()`'s first truthy result, polled every `every` s; AssertionError naming `what` if
    none comes within `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        if result := check():
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened within {timeout:g} s: {what}")
        time.sleep(every)
