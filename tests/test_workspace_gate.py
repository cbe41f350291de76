"""The workspace gate: turns share it, a load holds it alone, every wait is bounded."""

from __future__ import annotations

import asyncio

import pytest

from ghost.errors import Conflict
from ghost.testing.gate_order import LOAD, TURN_ENDED, TURN_STARTED, load_during_a_turn
from ghost.workspace.gate import WorkspaceGate


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_turns_run_side_by_side() -> None:
    async def scenario() -> int:
        gate = WorkspaceGate(wait_s=5)
        async with gate.turn(), gate.turn():
            return gate.readers

    assert run(scenario()) == 2


def test_load_waits_for_running_turns_then_proceeds() -> None:
    gate = WorkspaceGate(wait_s=5)
    assert run(load_during_a_turn(gate, gate, room_s=0.05)) == [TURN_STARTED, TURN_ENDED, LOAD]


def test_new_turns_wait_while_a_load_holds_the_gate() -> None:
    async def scenario() -> list[str]:
        gate, events = WorkspaceGate(wait_s=5), []
        holding = asyncio.Event()
        release = asyncio.Event()

        async def load() -> None:
            async with gate.exclusive():
                holding.set()
                await release.wait()
                events.append("load done")

        async def turn() -> None:
            async with gate.turn():
                events.append("turn ran")

        load_task = asyncio.create_task(load())
        await holding.wait()
        turn_task = asyncio.create_task(turn())
        await asyncio.sleep(0.05)
        assert events == [] and gate.exclusive_held
        release.set()
        await asyncio.gather(load_task, turn_task)
        return events

    assert run(scenario()) == ["load done", "turn ran"]


def test_waiting_load_keeps_new_turns_out_so_it_is_not_starved() -> None:
    async def scenario() -> list[str]:
        gate, events = WorkspaceGate(wait_s=5), []
        release_first = asyncio.Event()

        async def first_turn() -> None:
            async with gate.turn():
                await release_first.wait()
                events.append("first turn ended")

        async def load() -> None:
            async with gate.exclusive():
                events.append("load")

        async def late_turn() -> None:
            async with gate.turn():
                events.append("late turn")

        tasks = [asyncio.create_task(first_turn())]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(load()))
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(late_turn()))
        await asyncio.sleep(0.05)
        release_first.set()
        await asyncio.gather(*tasks)
        return events

    assert run(scenario()) == ["first turn ended", "load", "late turn"]


def test_load_gives_up_with_conflict_when_turns_do_not_finish() -> None:
    async def scenario() -> None:
        gate = WorkspaceGate(wait_s=5)
        async with gate.turn():
            with pytest.raises(Conflict):
                async with gate.exclusive(timeout=0.05):
                    raise AssertionError("must not get the gate while a turn runs")
            assert not gate.exclusive_held, "a load that gave up must not block turns"
            async with gate.turn(timeout=0.05):
                pass

    run(scenario())


def test_turn_gives_up_with_conflict_when_a_load_takes_too_long() -> None:
    async def scenario() -> None:
        gate = WorkspaceGate(wait_s=0.05)
        async with gate.exclusive():
            with pytest.raises(Conflict):
                async with gate.turn():
                    raise AssertionError("must not enter while a load holds the gate")
        assert gate.readers == 0
        async with gate.turn():
            assert gate.readers == 1

    run(scenario())


def test_cancelled_waiters_leave_the_gate_usable() -> None:
    async def scenario() -> None:
        gate = WorkspaceGate(wait_s=5)
        async with gate.turn():
            waiting_load = asyncio.create_task(gate.exclusive().__aenter__())
            await asyncio.sleep(0.01)
            assert gate.exclusive_held
            waiting_load.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting_load
            assert not gate.exclusive_held
        async with gate.exclusive(timeout=0.05):
            pass
        async with gate.turn(timeout=0.05):
            pass

    run(scenario())


def test_two_loads_take_turns() -> None:
    async def scenario() -> list[str]:
        gate, events = WorkspaceGate(wait_s=5), []

        async def load(name: str) -> None:
            async with gate.exclusive():
                events.append(f"{name} in")
                await asyncio.sleep(0.02)
                events.append(f"{name} out")

        await asyncio.gather(load("a"), load("b"))
        return events

    assert run(scenario()) == ["a in", "a out", "b in", "b out"]
