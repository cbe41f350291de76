"""The upstream as one value: its endpoint, and the served model list set in one place."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ghost.config import Settings
from ghost.llm.endpoint import UpstreamEndpoint
from ghost.llm.upstream import open_upstream
from ghost.testing.fake_upstream import DEFAULT_MODEL, FakeUpstream


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream().start()
    yield upstream
    upstream.stop()


def test_the_configured_endpoint_is_the_normalised_url_and_its_key(tmp_path: Path) -> None:
    endpoint = UpstreamEndpoint.configured(Settings(home=tmp_path, upstream_url="http://10.0.0.1:8080/v1/",
                                                    upstream_api_key="secret"))
    assert endpoint.exists and endpoint.at("/v1/models") == "http://10.0.0.1:8080/v1/models"
    assert endpoint.headers() == {"authorization": "Bearer secret"}
    assert UpstreamEndpoint("http://10.0.0.1:8080").headers() == {}
    assert not UpstreamEndpoint().exists


async def _served(settings: Settings, endpoint: UpstreamEndpoint, configured: list[str]) -> list[str]:
    async with httpx.AsyncClient() as http:
        upstream = open_upstream(settings, http, endpoint)
        try:
            await upstream.settle_models(configured, "fallback")
        finally:
            await upstream.aclose()
    return upstream.models


def test_models_are_the_configured_else_the_first_listed_else_the_fallback(tmp_path: Path,
                                                                           fake: FakeUpstream) -> None:
    settings = Settings(home=tmp_path, upstream_url=fake.url)
    endpoint = UpstreamEndpoint.configured(settings)
    assert asyncio.run(_served(settings, endpoint, ["alpha", "beta"])) == ["alpha", "beta"]
    assert asyncio.run(_served(settings, endpoint, [])) == [DEFAULT_MODEL]
    assert asyncio.run(_served(settings, UpstreamEndpoint(), [])) == ["fallback"]


def test_the_upstream_and_its_pool_share_the_one_endpoint(tmp_path: Path, fake: FakeUpstream) -> None:
    async def check() -> None:
        settings = Settings(home=tmp_path, upstream_url=fake.url + "/")
        async with httpx.AsyncClient() as http:
            upstream = open_upstream(settings, http, UpstreamEndpoint.configured(settings))
            try:
                assert upstream.url == fake.url and upstream.session is not None
                assert upstream.session.base == upstream.endpoint.url
            finally:
                await upstream.aclose()
            without = open_upstream(settings, http, UpstreamEndpoint())
            assert without.session is None and without.url == ""

    asyncio.run(check())
