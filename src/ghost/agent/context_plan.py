"""What to do to fit one upstream call into the window: pure decisions over plain numbers.

The fitter (ghost.agent.context) describes a call as a `Layout` — token counts by position, roles,
the tools' tokens, the budget, what is already folded — and asks these functions what to do next.
They do no I/O and change nothing, so each decision can be tested with plain data
(tests/test_context_plan.py). The fitter carries a decision out (ghost.agent.context_steps) and asks
again with the layout that results: a shortened result's or a summary's size is known only once it
is counted (by the upstream's tokenizer, where it has one), so a plan is made one stage at a time,
never whole in advance.

All counts here are "raw" (as counted); `Layout.calibrated` turns them into what the upstream is
expected to see (see ghost.agent.tokens).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ghost.agent.tokens import CHARS_PER_TOKEN

HARDER = 0.8  # after an overflow the upstream reported: the budget shrinks by this much more
NOTE_TOKENS = 60  # the note that replaces a shortened result's middle
MIN_SUMMARY_TOKENS = 32


@dataclass(frozen=True)
class Limits:
    """The settings the decisions use (`--context-*`)."""

    reply_reserve: int
    safety_margin: float
    tools_share: float
    tool_result_keep_chars: int
    summary_max_tokens: int
    fold_target: float


def reply_tokens(window: int, asked: Any, reserve: int) -> int:
    """Room kept for the answer: the request's `max_tokens` (at most half the window), else the
    reserve (at most an eighth)."""
    if isinstance(asked, int) and asked > 0:
        return min(asked, window // 2)
    return min(reserve, window // 8)


def budget(window: int, reply: int, margin: float, *, harder: bool) -> int:
    """Tokens the prompt may take."""
    tokens = window - reply - math.ceil(window * margin)
    return int(tokens * HARDER) if harder else tokens


def calibrated(raw: int, factor: float) -> int:
    return math.ceil(raw * factor)


def tools_budget(window: int, share: float, budget: int, fixed_raw: int, factor: float) -> int:
    """Raw tokens the tool schemas may take: their share of the window, at most the room the
    system prompt and the newest message leave (the message is never refused for the tools)."""
    room = budget - calibrated(fixed_raw, factor)
    return max(0, int(min(int(window * share), room) / max(factor, 1e-6)))


@dataclass(frozen=True)
class TooBig:
    """The system prompt and the newest message alone do not fit: the numbers for the error."""

    needed: int  # calibrated, the answer's room included
    head: int  # calibrated tokens of the system messages
    newest: int  # calibrated tokens of the newest user message

    @property
    def system_prompt_is_cause(self) -> bool:
        return self.head >= self.newest


def too_big(head_raw: int, newest_raw: int, factor: float, budget: int, reply: int) -> TooBig | None:
    """What never leaves the prompt (system messages, newest user message), if it cannot fit."""
    if calibrated(head_raw + newest_raw, factor) <= budget:
        return None
    return TooBig(calibrated(head_raw + newest_raw, factor) + reply, calibrated(head_raw, factor),
                  calibrated(newest_raw, factor))


@dataclass(frozen=True)
class Layout:
    """One call's conversation by size: the leading system messages, then the body by position."""

    head: int  # raw tokens of the leading system messages
    tokens: tuple[int, ...]  # raw tokens of each body message as it would be sent (a shortened result: its copy)
    roles: tuple[Any, ...]  # each body message's role
    newest_at: int  # body position of the newest user message; -1: none
    tools: int  # raw tokens of the tool schemas offered
    factor: float  # the calibration factor
    budget: int
    folded_end: int = 0  # body positions before this are folded (the newest user message excepted)
    folded_tokens: int = 0  # the summary message's raw tokens

    def calibrated(self, raw: int) -> int:
        return calibrated(raw, self.factor)

    def sent(self) -> int:
        """Raw tokens of the call as it stands: system messages, what is kept of the body, tools."""
        end = self.folded_end
        if not end:
            return self.head + sum(self.tokens) + self.tools
        early_user = self.tokens[self.newest_at] if 0 <= self.newest_at < end else 0
        return self.head + self.folded_tokens + early_user + sum(self.tokens[end:]) + self.tools

    def fits(self) -> bool:
        return self.calibrated(self.sent()) <= self.budget

    def room(self) -> int:
        """Tokens left for the conversation once the system messages and the tools are in."""
        return max(self.budget - self.calibrated(self.head + self.tools), 0)

    def summary_tokens(self, limits: Limits) -> int:
        return min(limits.summary_max_tokens, max(self.room() // 6, MIN_SUMMARY_TOKENS))

    def fold_ends(self) -> list[int]:
        """Where a new fold may end: before a message that is not a tool result (a call and its
        results stay together), never into the last exchange (the model needs what it just did),
        and past what is folded already."""
        last = len(self.roles) - 1
        while last > 0 and self.roles[last] == "tool":
            last -= 1
        return [k for k in range(max(1, self.folded_end + 1), last + 1) if self.roles[k] != "tool"]

    def with_tokens(self, position: int, tokens: int) -> Layout:
        return replace(self, tokens=(*self.tokens[:position], tokens, *self.tokens[position + 1:]))

    def with_fold(self, end: int, tokens: int) -> Layout:
        return replace(self, folded_end=end, folded_tokens=tokens)


# --- the stages, in the order they are tried --------------------------------------------------

@dataclass(frozen=True)
class Shorten:
    """Shorten these tool results (body positions, oldest first) to `keep` characters each, one at
    a time, until the call fits."""

    keep: int
    positions: tuple[int, ...]


def plan_shorten(layout: Layout, chars: Sequence[int | None], limits: Limits, *, harder: bool) -> Shorten:
    """`chars`: each body message's text length as it would be sent, None if it is not a tool
    result with text. A result already as short as `keep` (and the note) is left as it is."""
    keep = min(limits.tool_result_keep_chars, int(layout.room() * CHARS_PER_TOKEN / 4))
    keep = keep // 4 if harder else keep
    longest = keep + NOTE_TOKENS * CHARS_PER_TOKEN
    positions = tuple(k for k in range(layout.folded_end, len(chars))
                      if layout.roles[k] == "tool" and (n := chars[k]) is not None and n > longest)
    return Shorten(keep, positions)


@dataclass(frozen=True)
class Fold:
    """Fold body positions [start, end) into one summary of at most `summary_tokens`."""

    start: int  # where the previous fold ended (its summary is folded in too)
    end: int
    covers: int  # messages the summary stands for from the first on (the newest user message not)
    summary_tokens: int


def plan_fold(layout: Layout, limits: Limits) -> Fold | None:
    """The least folding that leaves the rest within the fold target (else the most possible);
    None when nothing more can be folded."""
    ends = layout.fold_ends()
    if not ends:
        return None
    summary = layout.summary_tokens(limits)
    end = _fold_end(layout, ends, summary, limits.fold_target)
    covers = end - (1 if 0 <= layout.newest_at < end else 0)
    return Fold(layout.folded_end, end, covers, summary)


def _fold_end(layout: Layout, ends: list[int], summary: int, fold_target: float) -> int:
    fixed = layout.head + layout.tools + summary
    sizes = layout.tokens
    after = [0] * (len(sizes) + 1)  # after[k]: tokens of body[k:]
    for position in range(len(sizes) - 1, -1, -1):
        after[position] = after[position + 1] + sizes[position]
    newest = max(layout.newest_at, 0)
    # The history left unfolded may fill `--context-fold-target` of the room that this turn's
    # own messages leave: they leave with the turn, the history stays and grows.
    free = layout.budget - layout.calibrated(fixed + after[newest])
    target = free * fold_target
    for end in ends:
        if end <= newest and layout.calibrated(after[end] - after[newest]) <= target:
            return end
        early_user = sizes[layout.newest_at] if 0 <= layout.newest_at < end else 0
        if end > newest and layout.calibrated(fixed + early_user + after[end]) <= layout.budget:
            return end
    return ends[-1]
