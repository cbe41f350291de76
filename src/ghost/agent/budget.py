"""The whole-turn output budget: how many tokens the model may generate over one chat turn.

A model that does not stop (a small one often does not) would otherwise generate until its
context is full, round after round. Each round's tokens are counted from the upstream's usage
(`completion_tokens`); while a round streams, and for a round whose usage is missing, they are
estimated from the characters received. Once the budget is spent the turn stops, mid-stream if
need be, and ends with `budget_note` (as the tool-round limit ends with its note).
"""

from __future__ import annotations

import math

from ghost.llm.chat import Completion

CHARS_PER_TOKEN = 4  # a typical English token; only an estimate for a stream without usage


def estimated_tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


def budget_note(limit: int) -> str:
    return (f"\n\n[Ghost stopped this turn: the model had generated about {limit} tokens "
            f"(limit set by --max-turn-output-tokens). Ask again, or raise the limit.]")


class OutputBudget:
    """Tokens generated so far in one turn, against `limit` (0: no limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0  # tokens of the finished rounds
        self._round_chars = 0  # characters of the round in progress

    def add(self, text: str) -> None:
        self._round_chars += len(text)

    def end_round(self, completion: Completion) -> None:
        if completion.usage is not None:
            self.used += completion.usage.completion_tokens
        else:  # the tool calls' arguments were generated too
            chars = self._round_chars + sum(len(c.name) + len(c.arguments) for c in completion.tool_calls)
            self.used += estimated_tokens(chars)
        self._round_chars = 0

    @property
    def spent(self) -> bool:
        return bool(self.limit) and self.used + estimated_tokens(self._round_chars) >= self.limit
