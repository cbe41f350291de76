from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from capabilities import OPT_OUT_VARIABLE, OPTED_OUT
from ghost.store.db import Conn, Database, SqliteDatabase
from ghost.store.engine import database_for
from ghost.testing.fake_upstream import FakeUpstream
from ghost.testing.postgres import PostgresServer
from ghost.testing.server import GhostServer
from mcp_toys import HttpToy


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The count of tests skipped because the run opted out of what they need (capabilities.py)."""
    skipped = terminalreporter.stats.get("skipped", [])
    count = sum(1 for report in skipped if OPTED_OUT in str(report.longrepr))
    if count or OPT_OUT_VARIABLE in os.environ:
        terminalreporter.write_line(f"{count} test{'' if count == 1 else 's'} opted out ({OPT_OUT_VARIABLE}): not run",
                                    yellow=True, bold=True)


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def _fresh_upstream(request: pytest.FixtureRequest) -> None:
    if "upstream" in request.fixturenames:
        request.getfixturevalue("upstream").reset()


@pytest.fixture(scope="session")
def ghost(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    """One Ghost for the session, on the fake upstream, with the test key."""
    server = GhostServer("--upstream-url", upstream.url, home=tmp_path_factory.mktemp("ghost-home"))
    with server:
        yield server


@pytest.fixture()
def client(ghost: GhostServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ghost.url, headers=ghost.headers, timeout=30) as http:
        yield http


@pytest.fixture()
def anon(ghost: GhostServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ghost.url, timeout=30) as http:
        yield http


# --- the store on both engines (SQLite, PostgreSQL; docs/scaling.md) ----------------------------
ENGINES = ("sqlite", "postgresql")
STATE_TABLES = ("scratchpad", "history_messages", "history", "context_summaries", "session_summaries", "responses", "api_keys",
                "turn_starts")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (started only by tests that use it)."""
    server = PostgresServer().start()
    yield server
    server.remove()


@pytest.fixture(scope="module")
def postgres_url(postgres: PostgresServer, request: pytest.FixtureRequest) -> str:
    """A fresh database of its own for each test module."""
    return postgres.create_database(request.module.__name__.rsplit(".", 1)[-1].lower())


@pytest.fixture(params=ENGINES)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """An open store on each engine: SQLite in the test's folder, PostgreSQL emptied for each test."""
    if request.param == "sqlite":
        database: Database = await SqliteDatabase(tmp_path / "ghost.db").open()
    else:
        database = await database_for(request.getfixturevalue("postgres_url"), tmp_path / "unused.db").open()
        await database.run(_empty)
    try:
        yield database
    finally:
        await database.close()


def _empty(conn: Conn) -> None:
    for table in STATE_TABLES:
        conn.execute(f"DELETE FROM {table}")
    conn.execute("DELETE FROM users WHERE name <> 'admin'")


@pytest.fixture(scope="module")
def http_toy() -> Iterator[HttpToy]:
    """The toy MCP server over Streamable HTTP, for a module's Ghost to reach as `{"url": ...}`."""
    server = HttpToy()
    server.start()
    try:
        yield server
    finally:
        server.stop()
