"""The order a workspace gate puts a turn and a load in, seen through events: shared by the tests
of one process's gate and of the leases that extend it across replicas."""

from __future__ import annotations

import asyncio

from ghost.workspace.gate import WorkspaceGate

TURN_STARTED, TURN_ENDED, LOAD = "turn started", "turn ended", "load"


async def load_during_a_turn(turn_gate: WorkspaceGate, load_gate: WorkspaceGate, room_s: float) -> list[str]:
    """Start a turn on `turn_gate` and keep it running; once it has started, start a load on
    `load_gate` (the same gate, or another replica's for the same workspace). After `room_s` (room
    for a wrong order to show; the order itself is what is checked) the load must not have run;
    then the turn ends. Returns the events in the order they happened: a gate that makes loads
    wait for turns gives [TURN_STARTED, TURN_ENDED, LOAD]."""
    events: list[str] = []
    started, may_end = asyncio.Event(), asyncio.Event()

    async def turn() -> None:
        async with turn_gate.turn():
            events.append(TURN_STARTED)
            started.set()
            await may_end.wait()
            events.append(TURN_ENDED)

    async def load() -> None:
        async with load_gate.exclusive():
            events.append(LOAD)

    turning = asyncio.create_task(turn())
    await started.wait()
    loading = asyncio.create_task(load())
    await asyncio.sleep(room_s)
    assert LOAD not in events, f"the load ran while the turn was running: {events}"
    may_end.set()
    await asyncio.gather(turning, loading)
    return events
