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


def test_a_summary_prompt_takes_an_assistant_message_of_parts_with_tool_calls() -> None:
    # Found by the schema fuzzer: content as a list of parts beside tool calls gave a 500.
    from ghost.agent.summary import render

    message = {"role": "assistant", "content": [{"type": "text", "text": "let me look"}],
               "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "read_file", "arguments": "{}"}}]}
    line = render(None, [message], 10_000)
    assert "let me look [called read_file({})]" in line
