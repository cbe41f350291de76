"""`create_app` used directly (as a program embedding Ghost, or a test, would) checks and resolves
the settings exactly as `ghost serve` does: a weak key on a public bind is refused, a weak key that
is allowed is warned about, and the generated key is the one the served app checks."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import httpx
import pytest

from ghost.app import create_app
from ghost.config import Settings
from ghost.keyfile import StartRefused, read_key
from ghost.testing.fake_upstream import FakeUpstream
from ghost.testing.inprocess import InProcessServer

WEAK = {"no auth": {"no_auth": True}, "short key": {"api_key": "short-key"},
        "the seed's public key": {"api_key": "ghost-secret-123"}}


@pytest.mark.parametrize("weak", list(WEAK.values()), ids=list(WEAK))
def test_a_weak_key_on_a_public_bind_is_refused(tmp_path: Path, weak: dict[str, object]) -> None:
    with pytest.raises(StartRefused, match="refusing to bind 0.0.0.0") as refused:
        create_app(Settings(home=tmp_path, host="0.0.0.0", **weak))
    assert "--insecure" in str(refused.value)  # the same message `ghost serve` prints
    # The control: the same settings pass the check on loopback, and with --insecure.
    assert create_app(Settings(home=tmp_path, **weak)).state.settings.weak_key() is not None
    assert create_app(Settings(home=tmp_path, host="0.0.0.0", insecure=True, **weak))


def test_contradictions_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StartRefused, match="empty API key"):
        create_app(Settings(home=tmp_path, api_key=""))
    with pytest.raises(StartRefused, match="contradict"):
        create_app(Settings(home=tmp_path, api_key="a-strong-key-0123456789", no_auth=True))
    with pytest.raises(StartRefused, match="cors-origins"):
        create_app(Settings(home=tmp_path, api_key="ghost-secret-123", cors_origins="*"))


def test_an_allowed_weak_key_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ghost")
    create_app(Settings(home=tmp_path, api_key="a-strong-key-0123456789"))
    assert not [r for r in caplog.records if "weak" in r.getMessage()]  # the control: a strong key is quiet
    create_app(Settings(home=tmp_path, api_key="short-key"))
    assert any("the API key is weak" in r.getMessage() for r in caplog.records)
    create_app(Settings(home=tmp_path, host="0.0.0.0", insecure=True, api_key="ghost-secret-123"))
    assert any("INSECURE" in r.getMessage() for r in caplog.records)


def test_a_key_file_that_cannot_be_trusted_is_refused(tmp_path: Path) -> None:
    (tmp_path / "api_key").mkdir()  # not a regular file
    with pytest.raises(StartRefused, match="not a regular file"):
        create_app(Settings(home=tmp_path))


def test_the_generated_key_is_the_one_the_served_app_checks(upstream: FakeUpstream, tmp_path: Path) -> None:
    app = create_app(Settings(home=tmp_path, upstream_url=upstream.url))
    key = read_key(tmp_path / "api_key")
    assert key and app.state.settings.api_key == key  # resolved once, at create_app
    assert stat.S_IMODE((tmp_path / "api_key").stat().st_mode) == 0o600
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700
    with InProcessServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        assert http.get("/v1/models").status_code == 401
        assert http.get("/v1/models", headers={"X-Ghost-Key": "ghost-secret-123"}).status_code == 401
        assert http.get("/v1/models", headers={"X-Ghost-Key": key}).status_code == 200
        health = http.get("/api/health", headers={"X-Ghost-Key": key}).json()
        assert health["storage"] == str(tmp_path.resolve())
