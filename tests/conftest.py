from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from ghost.testing.fake_upstream import FakeUpstream
from ghost.testing.server import GhostServer


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
