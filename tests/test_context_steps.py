"""The pure part of the context steps (ghost.agent.context_steps): a shortened tool result's text.
Saving the full text and writing summaries are tested end to end in tests/test_context.py."""

from __future__ import annotations

import pytest

from ghost.agent.context_steps import shortened_text

TEXT = "".join(f"{n:05d}\n" for n in range(1000))  # 6,000 characters


@pytest.mark.parametrize("keep, path, note", [
    (600, ".ghost/outputs/abc.txt", "[… 5,400 of 6,000 characters left out to fit the context window. The full "
                                    "result is saved in the sandbox: read it with read_file(path=\".ghost/outputs/abc.txt\") …]"),
    (600, None, "[… 5,400 characters left out to fit the context window …]"),
    (0, None, "[… 6,000 characters left out to fit the context window …]"),
])
def test_a_shortened_result_keeps_a_head_and_a_tail_around_a_note(keep: int, path: str | None, note: str) -> None:
    short = shortened_text(TEXT, keep, path)
    head, rest = short[: keep * 2 // 3], short[keep * 2 // 3:]
    assert head == TEXT[: keep * 2 // 3]
    assert rest == f"\n{note}\n{TEXT[len(TEXT) - keep // 3:]}"
