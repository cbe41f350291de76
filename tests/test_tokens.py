"""Token counting: cached per message, calibrated from what the upstream reports."""

from __future__ import annotations

import asyncio

from ghost.agent.tokens import MESSAGE_OVERHEAD, TokenCounter, message_key


def test_counts_are_cached_by_content() -> None:
    counter = TokenCounter()
    message = {"role": "user", "content": "x" * 400}
    asyncio.run(counter.count_new([(message_key(message), message)]))
    assert counter.cached(message_key(dict(message))) == 100 + MESSAGE_OVERHEAD
    assert counter.cached(message_key({"role": "user", "content": "y"})) is None


def test_calibration_follows_the_largest_recent_ratio_and_ignores_nonsense() -> None:
    counter = TokenCounter()
    counter.learn(1000, 1300)
    counter.learn(1000, 1100)
    assert counter.factor == 1.3 and counter.calibrated(1000) == 1300
    counter.learn(1000, 10)  # a fake or silently cut prompt: not a counting error
    counter.learn(1000, 90_000)
    assert counter.factor == 1.3
