"""<think> splitting: tags anywhere, split across any chunk boundary."""

from __future__ import annotations

import pytest

from ghost.llm.think import ThinkSplitter, strip_think

TEXT = "Intro <think>plan A, then B</think>Answer <b>bold</b> done"


def run(chunks: list[str]) -> tuple[str, str]:
    splitter = ThinkSplitter()
    parts = [p for chunk in chunks for p in splitter.feed(chunk)] + splitter.flush()
    content = "".join(t for k, t in parts if k == "content")
    reasoning = "".join(t for k, t in parts if k == "reasoning")
    return content, reasoning


def test_whole_text_in_one_chunk() -> None:
    assert run([TEXT]) == ("Intro Answer <b>bold</b> done", "plan A, then B")


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7])
def test_any_chunking_gives_the_same_split(size: int) -> None:
    chunks = [TEXT[i:i + size] for i in range(0, len(TEXT), size)]
    assert run(chunks) == run([TEXT])


def test_a_lone_angle_bracket_is_not_held_forever() -> None:
    splitter = ThinkSplitter()
    assert splitter.feed("a <") == [("content", "a ")]
    assert splitter.feed("b") == [("content", "<b")]


def test_unclosed_think_at_end_is_reasoning() -> None:
    assert run(["<think>still thinking"]) == ("", "still thinking")


def test_partial_tag_at_end_is_flushed_as_text() -> None:
    assert run(["price < 5 <thi"]) == ("price < 5 <thi", "")


def test_strip_think_removes_every_block() -> None:
    assert strip_think("<think>x</think>A<think>y</think>B") == "AB"
