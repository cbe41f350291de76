"""The context fitter's decisions (ghost.agent.context_plan) on plain numbers: no upstream, no
store, no messages — the sizes a call is made of in, the decision out. How a real Ghost carries
them out is tested end to end in tests/test_context.py."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from ghost.agent.context_plan import (Fold, Layout, Limits, Shorten, TooBig, budget, plan_fold, plan_shorten,
                                      reply_tokens, too_big, tools_budget)

LIMITS = Limits(reply_reserve=1024, safety_margin=0.05, tools_share=0.4, tool_result_keep_chars=2000,
                summary_max_tokens=512, fold_target=0.5)

# system 100 | user 50, call 20, its result 1000, assistant 30, newest user 40, call 10, its result 500 | tools 200
CHAT = Layout(head=100, tokens=(50, 20, 1000, 30, 40, 10, 500),
              roles=("user", "assistant", "tool", "assistant", "user", "assistant", "tool"),
              newest_at=4, tools=200, factor=1.0, budget=1000)
RESULT_CHARS: list[int | None] = [None, None, 4000, None, None, None, 900]


@pytest.mark.parametrize("window, asked, expected", [
    (8192, 300, 300),  # the request's max_tokens
    (8192, 6000, 4096),  # at most half the window
    (8192, None, 1024),  # else the reserve
    (4096, None, 512),  # at most an eighth of the window
    (8192, 0, 1024),  # nothing asked
    (8192, "300", 1024),  # not a number: not asked
])
def test_room_for_the_answer(window: int, asked: Any, expected: int) -> None:
    assert reply_tokens(window, asked, LIMITS.reply_reserve) == expected


@pytest.mark.parametrize("harder, expected", [(False, 4096 - 512 - 205), (True, int((4096 - 512 - 205) * 0.8))])
def test_budget_leaves_the_answer_and_the_margin_and_shrinks_after_an_overflow(harder: bool, expected: int) -> None:
    assert budget(4096, 512, 0.05, harder=harder) == expected


@pytest.mark.parametrize("fixed_raw, factor, expected", [
    (1000, 1.0, 1638),  # the tools' share of the window
    (1000, 2.0, 689),  # the room left, in raw tokens: (3379 - 2000) / 2
    (5000, 1.0, 0),  # no room: no tools, the message is not refused for them
])
def test_tools_budget(fixed_raw: int, factor: float, expected: int) -> None:
    assert tools_budget(4096, 0.4, 3379, fixed_raw, factor) == expected


@pytest.mark.parametrize("head, newest, expected", [
    (1000, 200, TooBig(needed=1300, head=1000, newest=200)),
    (100, 5000, TooBig(needed=5200, head=100, newest=5000)),
    (500, 500, None),  # exactly the budget: fits
])
def test_what_never_leaves_the_prompt_must_fit(head: int, newest: int, expected: TooBig | None) -> None:
    assert too_big(head, newest, 1.0, 1000, 100) == expected


def test_the_cause_named_is_the_larger_part() -> None:
    assert TooBig(1300, head=1000, newest=200).system_prompt_is_cause
    assert not TooBig(5200, head=100, newest=5000).system_prompt_is_cause


@pytest.mark.parametrize("layout, sent", [
    (CHAT, 100 + 1650 + 200),
    (replace(CHAT, folded_end=4, folded_tokens=60), 100 + 60 + 550 + 200),  # the newest user message is after the fold
    (replace(CHAT, folded_end=5, folded_tokens=60), 100 + 60 + 40 + 510 + 200),  # ...or kept from inside it
])
def test_what_a_call_sends(layout: Layout, sent: int) -> None:
    assert layout.sent() == sent


@pytest.mark.parametrize("factor, budget_, fits", [(1.0, 1950, True), (1.0, 1949, False), (1.1, 2145, True),
                                                   (1.1, 2144, False)])
def test_fits_counts_calibrated(factor: float, budget_: int, fits: bool) -> None:
    assert replace(CHAT, factor=factor, budget=budget_).fits() is fits


@pytest.mark.parametrize("layout, ends", [
    (CHAT, [1, 3, 4, 5]),  # never inside a call's results, never into the last exchange
    (replace(CHAT, folded_end=3), [4, 5]),  # only past what is folded already
    (replace(CHAT, tokens=(50,), roles=("user",), newest_at=0), []),
    (replace(CHAT, tokens=(50, 20, 1000), roles=("user", "assistant", "tool"), newest_at=0), [1]),
])
def test_where_a_fold_may_end(layout: Layout, ends: list[int]) -> None:
    assert layout.fold_ends() == ends


@pytest.mark.parametrize("layout, harder, expected", [
    (CHAT, False, Shorten(keep=700, positions=(2,))),  # a quarter of the room; 900 chars is short enough
    (CHAT, True, Shorten(keep=175, positions=(2, 6))),  # after an overflow: a quarter of that
    (replace(CHAT, folded_end=3), True, Shorten(keep=175, positions=(6,))),  # folded results are gone already
    (replace(CHAT, budget=10_000), False, Shorten(keep=2000, positions=(2,))),  # at most the setting
    (replace(CHAT, budget=200), False, Shorten(keep=0, positions=(2, 6))),  # no room at all
])
def test_which_tool_results_to_shorten(layout: Layout, harder: bool, expected: Shorten) -> None:
    assert plan_shorten(layout, RESULT_CHARS, LIMITS, harder=harder) == expected


@pytest.mark.parametrize("layout, expected", [
    # room 700, summary 116: the history up to the newest message is folded, the turn's own stays
    (CHAT, Fold(start=0, end=4, covers=4, summary_tokens=116)),
    (replace(CHAT, folded_end=1, folded_tokens=60), Fold(start=1, end=4, covers=4, summary_tokens=116)),
    # no user message: the least folding that fits the budget...
    (Layout(100, (300, 300, 300), ("assistant",) * 3, -1, 0, 1.0, 900), Fold(0, 1, 1, 133)),
    # ...else the most that may be folded
    (Layout(100, (300, 300, 300), ("assistant",) * 3, -1, 0, 1.0, 400), Fold(0, 2, 2, 50)),
    # the newest user message inside the fold is kept, so the summary covers one message fewer
    (Layout(0, (50, 50, 400, 400), ("assistant", "user", "assistant", "assistant"), 1, 0, 1.0, 700),
     Fold(0, 3, 2, 116)),
])
def test_where_to_fold(layout: Layout, expected: Fold) -> None:
    assert plan_fold(layout, LIMITS) == expected


def test_nothing_to_fold() -> None:
    assert plan_fold(replace(CHAT, tokens=(50,), roles=("user",), newest_at=0), LIMITS) is None


def test_the_summary_is_bounded_by_the_setting_and_the_room() -> None:
    assert replace(CHAT, budget=100_000).summary_tokens(LIMITS) == 512
    assert CHAT.summary_tokens(LIMITS) == 700 // 6
    assert replace(CHAT, budget=300).summary_tokens(LIMITS) == 32


def test_a_layout_changes_only_by_making_a_new_one() -> None:
    shortened = CHAT.with_tokens(2, 400)
    folded = shortened.with_fold(4, 60)
    assert CHAT.tokens[2] == 1000 and shortened.tokens == (50, 20, 400, 30, 40, 10, 500)
    assert (shortened.folded_end, folded.folded_end, folded.folded_tokens) == (0, 4, 60)
