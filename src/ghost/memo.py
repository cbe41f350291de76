"""A per-key memo of a pure function whose keys come from requests, so its size must be bounded."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedMemo(Generic[K, V]):
    """`compute(key)`, remembered per key; emptied when full, so no stream of made-up keys makes it grow.

    Emptying rather than evicting one entry keeps a hit a single dict lookup; the keys it serves
    (hosts, paths) repeat, so a refill costs a few misses.
    """

    __slots__ = ("_answers", "_compute", "limit")

    def __init__(self, compute: Callable[[K], V], limit: int) -> None:
        if limit < 1:
            raise ValueError("a memo's limit must be at least 1")
        self._answers: dict[K, V] = {}
        self._compute = compute
        self.limit = limit

    def __call__(self, key: K) -> V:
        answers = self._answers
        try:
            return answers[key]
        except KeyError:
            pass
        if len(answers) >= self.limit:
            answers.clear()
        value = answers[key] = self._compute(key)
        return value

    def __len__(self) -> int:
        return len(self._answers)
