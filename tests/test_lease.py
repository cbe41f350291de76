"""Per-workspace leases across replicas (PostgreSQL advisory locks), through the workspace gate.

Two `PostgresDatabase` objects on one database stand for two replicas; each has its own gate for
the same workspace, as two Ghost processes would. Order is checked by events, not clocks.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from ghost.errors import Conflict
from ghost.store.lease import LEASE_CLASS
from ghost.store.postgres import PostgresDatabase
from ghost.testing.gate_order import LOAD, TURN_ENDED, TURN_STARTED, load_during_a_turn
from ghost.workspace.gate import WorkspaceGate


@pytest.fixture()
async def replicas(postgres_url: str) -> AsyncIterator[tuple[PostgresDatabase, PostgresDatabase]]:
    first, second = PostgresDatabase(postgres_url, pool_size=2), PostgresDatabase(postgres_url, pool_size=2)
    await first.open()
    await second.open()
    yield first, second
    await first.close()
    await second.close()


def gate(db: PostgresDatabase, name: str = "alice", wait_s: float = 30.0) -> WorkspaceGate:
    return WorkspaceGate(wait_s, lease=lambda exclusive, wait: db.lease(name, exclusive=exclusive, wait_s=wait))


async def test_a_load_on_one_replica_waits_for_a_turn_on_another(replicas) -> None:
    events = await load_during_a_turn(gate(replicas[0]), gate(replicas[1]), room_s=0.5)
    assert events == [TURN_STARTED, TURN_ENDED, LOAD]


async def test_turns_on_two_replicas_run_side_by_side(replicas) -> None:
    a, b = gate(replicas[0]), gate(replicas[1])
    async with a.turn(), b.turn():
        assert replicas[0].leases.held == 1 and replicas[1].leases.held == 1
    # Several turns of one process share one lease (one connection), not one each.
    async with a.turn(), a.turn(), a.turn():
        assert replicas[0].leases.held == 1


async def test_a_turn_waits_for_a_load_elsewhere_then_gets_409(replicas) -> None:
    a, b = gate(replicas[0]), gate(replicas[1], wait_s=1.0)
    async with a.exclusive():
        with pytest.raises(Conflict, match="load is in progress"):
            async with b.turn():
                pass
        async with gate(replicas[1], name="bob").turn():  # another workspace is not held up
            pass
    async with b.turn():  # and once the load is over, turns go on
        pass


async def test_a_load_waits_for_turns_elsewhere_then_gets_409(replicas) -> None:
    a, b = gate(replicas[0]), gate(replicas[1], wait_s=1.0)
    async with a.turn():
        with pytest.raises(Conflict, match="still running"):
            async with b.exclusive():
                pass
    async with b.exclusive():
        pass


async def test_a_dead_replicas_lease_is_freed_with_its_connection(replicas, postgres_url: str) -> None:
    # A separate process takes the workspace's lease as a replica would, then dies by SIGKILL.
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time, psycopg\n"
         f"c = psycopg.connect({postgres_url!r}, autocommit=True)\n"
         f"c.execute('SELECT pg_advisory_lock_shared(%s, hashtext(%s))', ({LEASE_CLASS}, 'alice'))\n"
         "print('held', flush=True)\n"
         "time.sleep(600)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(Conflict):  # the probe: its lease really is held
            async with gate(replicas[0], wait_s=1.0).exclusive():
                pass
        holder.kill()
        holder.wait(30)
        async with gate(replicas[0], wait_s=30.0).exclusive():
            pass
    finally:
        holder.kill()
        holder.wait(30)


async def test_a_cancelled_wait_leaves_no_lease_behind(replicas) -> None:
    a, b = gate(replicas[0]), gate(replicas[1], wait_s=2.0)
    async with a.turn():
        waiting = asyncio.create_task(b.exclusive().__aenter__())
        await asyncio.sleep(0.3)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    await asyncio.sleep(0.2)
    async with b.exclusive():  # nothing left half-taken by the cancelled wait
        assert replicas[1].leases.held == 1
