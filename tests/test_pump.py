"""The pump between a turn and the client (`ghost.agent.pump`): a turn stopped while its events
wait for room in the channel is closed within the pump's own end, not left for the collector."""

from __future__ import annotations

import asyncio
from typing import Any

from ghost.agent.pump import CAPACITY, pumped
from ghost.events import TextDelta


async def test_a_turn_stopped_while_waiting_for_room_cleans_up_before_the_pump_ends() -> None:
    produced: list[int] = []
    cleaned: list[str] = []

    async def turn() -> Any:
        try:
            for n in range(CAPACITY * 4):
                produced.append(n)
                yield TextDelta(str(n))
        finally:
            cleaned.append("turn")

    events = pumped(turn(), idle_seconds=60)
    first = await anext(events)
    # The producer fills the channel and then waits for room: one more event made than it holds.
    while len(produced) < len(first) + CAPACITY + 1:
        await asyncio.sleep(0)
    for _ in range(10):  # it stays there: the channel is full and nobody drains it
        await asyncio.sleep(0)
    assert len(produced) == len(first) + CAPACITY + 1 and cleaned == []  # the probe: not cleaned yet
    await events.aclose()  # the client went away
    assert cleaned == ["turn"]  # at once, inside the pump's wait — not when the turn is collected


async def test_a_finished_turn_is_not_closed_twice() -> None:
    cleaned: list[str] = []

    async def turn() -> Any:
        try:
            yield TextDelta("only")
        finally:
            cleaned.append("turn")

    batches = [batch async for batch in pumped(turn(), idle_seconds=60)]
    assert [event for batch in batches for event in batch] == [TextDelta("only")]
    assert cleaned == ["turn"]
