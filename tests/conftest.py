from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from capabilities import OPT_OUT_VARIABLE, OPTED_OUT
from ghost.testing.fake_upstream import FakeUpstream
from ghost.testing.server import GhostServer


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
