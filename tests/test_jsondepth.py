"""`too_deep` against the depth Python's own parser finds, on shapes meant to fool a bracket count."""

from __future__ import annotations

import json

import pytest

from ghost.jsondepth import nests_deeper, too_deep


def real_depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((real_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((real_depth(v) for v in value.values()), default=0)
    return 0


SHAPES = [
    "[]", "{}", "[[[]]]", '{"a": [1, {"b": [2, 3]}]}', "[" * 64 + "]" * 64, "[" * 65 + "]" * 65,
    '["[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["]',  # brackets in a string
    '["\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["]',  # escaped quote first
    '{"k\\\\": ' + "[" * 70 + "]" * 70 + "}",  # an escaped backslash ends the key
    "[" + ",".join(["[" * 60 + "]" * 60] * 50) + "]",  # wide and just under the limit
    "[" + ",".join(["[" * 64 + "]" * 64] * 50) + "]",  # wide and just over it
    '[{"a":' * 40 + "1" + "}]" * 40,  # braces and brackets mixed: 80 deep
    '[{"a":' * 32 + "1" + "}]" * 32,  # mixed, 64 deep
]


@pytest.mark.parametrize("text", SHAPES)
def test_agrees_with_the_parser(text: str) -> None:
    depth = real_depth(json.loads(text))
    assert too_deep(text.encode(), 64) == (depth > 64), depth


def test_far_too_deep_and_unclosed_is_too_deep() -> None:
    assert too_deep(b"[" * 200_000, 64)
    assert too_deep(b'{"a":' * 100_000, 64)


def test_malformed_but_shallow_is_left_to_the_parser() -> None:
    assert not too_deep(b"[}" * 100, 64)
    assert not too_deep(b'"unterminated [[[[', 64)


@pytest.mark.parametrize("text", SHAPES + ['"just a string"', "5", "[]", '{"a": "[[[[[[[["}'])
def test_the_walk_of_a_parsed_value_agrees_with_the_parser(text: str) -> None:
    value = json.loads(text)
    for limit in (1, 2, 64):
        assert nests_deeper(value, limit) == (real_depth(value) > limit), (text[:40], limit)
