"""The TOML config file (--config / GHOST_CONFIG): its settings take effect on a real Ghost, below
flags and environment variables; every bad file stops the start with one clear line."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from ghost.cli import main
from ghost.config import ConfigFileError, Settings
from ghost.testing.fake_upstream import FakeUpstream
from ghost.testing.server import GhostServer, clean_env, free_port


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def deep(levels: int) -> dict[str, object]:
    """A JSON body nested `levels` deep."""
    body: object = 1
    for _ in range(levels - 1):
        body = [body]
    return {"name": "x", "nested": body}


# --- a real Ghost configured by a file --------------------------------------------------------------

def test_a_file_configures_a_real_ghost_below_flags_and_environment(upstream: FakeUpstream, tmp_path: Path) -> None:
    config = write(tmp_path / "ghost.toml", f"""
# the upstream and the model names only here: without the file Ghost would start the bundled model
upstream_url = "{upstream.url}"
model = "file-model, second-model"
unauth-max-body-bytes = 300   # the flag's spelling works too
max_json_depth = 5            # the environment's 8 wins
max_request_bytes = 2048      # the flag's 4096 wins
""")
    ghost = GhostServer("--max-request-bytes", "4096", home=tmp_path / "home",
                        env={"GHOST_CONFIG": str(config), "GHOST_MAX_JSON_DEPTH": "8"})
    with ghost, httpx.Client(base_url=ghost.url, headers=ghost.headers, timeout=60) as http:
        models = [m["id"] for m in http.get("/v1/models").json()["data"]]
        assert models[0] == "file-model" and "second-model" in models
        # From the file: the unauthenticated routes' body cap.
        assert http.post("/api/show", content=b'{"name": "' + b"x" * 250 + b'"}').status_code != 413
        assert http.post("/api/show", content=b'{"name": "' + b"x" * 400 + b'"}').status_code == 413
        # The environment over the file: depth 8 passes the nesting check, 9 does not.
        assert http.post("/api/show", json=deep(7)).status_code != 400
        assert http.post("/api/show", json=deep(10)).status_code == 400
        # The flag over the file: a 3000-byte chat body is within --max-request-bytes 4096.
        body = {"model": "file-model", "messages": [{"role": "user", "content": "x" * 3000}]}
        assert http.post("/v1/chat/completions", json=body).status_code != 413
        assert http.post("/v1/chat/completions", json={**body, "pad": "x" * 2000}).status_code == 413


def test_the_flag_names_the_file_too(upstream: FakeUpstream, tmp_path: Path) -> None:
    config = write(tmp_path / "ghost.toml", f'upstream_url = "{upstream.url}"\nmodel = "flag-file-model"\n')
    with GhostServer("--config", str(config), home=tmp_path / "home") as ghost:
        models = httpx.get(ghost.url + "/v1/models", headers=ghost.headers, timeout=60).json()["data"]
        assert models[0]["id"] == "flag-file-model"


def test_ghost_key_finds_the_home_the_file_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "elsewhere"
    home.mkdir()
    (home / "api_key").write_text("a-generated-key-0123456789abcdef\n")
    monkeypatch.setenv("GHOST_CONFIG", str(write(tmp_path / "ghost.toml", f'home = "{home}"\n')))
    assert main(["key"]) == 0
    assert capsys.readouterr().out.strip() == "a-generated-key-0123456789abcdef"


# --- precedence, in process -------------------------------------------------------------------------

def test_precedence_is_flag_then_environment_then_file_then_default(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path / "ghost.toml", "read_timeout = 11\nconnect_timeout = 12\nport = 1234\n")
    monkeypatch.setenv("GHOST_CONFIG", str(config))
    monkeypatch.setenv("GHOST_CONNECT_TIMEOUT", "22")
    monkeypatch.setenv("GHOST_PORT", "2222")
    settings = Settings(port=3333)
    assert (settings.port, settings.connect_timeout, settings.read_timeout) == (3333, 22, 11)
    assert settings.sandbox_timeout == Settings.model_fields["sandbox_timeout"].default
    monkeypatch.delenv("GHOST_CONFIG")
    assert Settings().read_timeout == 300  # the control: without the file, the default


# --- bad files: a clear refusal ---------------------------------------------------------------------

BAD = {
    "unknown name": ("prot = 1\n", r"unknown setting 'prot' \(did you mean 'port'\?\)"),
    "not TOML": ("port = \n", "not valid TOML"),
    "not UTF-8": (b"port = 1 # \xff\n", "not valid TOML"),
    "config in the file": ('config = "other.toml"\n', "'config' cannot be set"),
    "named twice": ("read_timeout = 1\nread-timeout = 2\n", "'read_timeout' is set twice"),
}


@pytest.mark.parametrize("content,message", list(BAD.values()), ids=list(BAD))
def test_a_bad_file_is_refused(tmp_path: Path, content: str | bytes, message: str) -> None:
    path = tmp_path / "ghost.toml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ConfigFileError, match=message) as refused:
        Settings(config=path)
    assert str(path) in str(refused.value)


def test_a_missing_file_a_folder_and_a_fifo_are_refused_without_waiting(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="cannot read it: No such file"):
        Settings(config=tmp_path / "missing.toml")
    with pytest.raises(ConfigFileError, match="not a regular file"):
        Settings(config=tmp_path)
    os.mkfifo(tmp_path / "fifo.toml")  # nobody writes to it: a blocking open would hang here
    with pytest.raises(ConfigFileError, match="not a regular file"):
        Settings(config=tmp_path / "fifo.toml")


def test_a_huge_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "ghost.toml", "# " + "x" * (1024 * 1024) + "\nport = 1\n")
    with pytest.raises(ConfigFileError, match="larger than"):
        Settings(config=path)


def test_a_wrong_type_or_range_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="port"):
        Settings(config=write(tmp_path / "a.toml", 'port = "eleven"\n'))
    with pytest.raises(ValidationError, match="read_timeout"):
        Settings(config=write(tmp_path / "b.toml", "read_timeout = -1\n"))
    with pytest.raises(ValidationError, match="tool_activity"):
        Settings(config=write(tmp_path / "c.toml", 'tool_activity = "some"\n'))


def test_a_readable_file_holding_a_key_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ghost")
    path = write(tmp_path / "ghost.toml", 'api_key = "a-strong-key-0123456789"\n')
    path.chmod(0o600)
    Settings(config=path)
    assert "chmod 600" not in caplog.text  # the control: a private file is quiet
    path.chmod(0o644)
    assert Settings(config=path).api_key == "a-strong-key-0123456789"
    assert "holds api_key and other users may read it" in caplog.text


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ghost", "serve", "--port", str(free_port()), *args],
                          env=clean_env(), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("content,message", [
    ("prot = 1\n", "unknown setting 'prot' (did you mean 'port'?)"),
    ("[upstream]\nurl = 1\n", "unknown setting 'upstream'"),
    ("read_timeout = 'soon'\n", "read_timeout"),
], ids=["unknown name", "a table", "wrong type"])
def test_serve_stops_with_one_clear_line(tmp_path: Path, content: str, message: str) -> None:
    config = write(tmp_path / "ghost.toml", content)
    result = serve("--home", str(tmp_path / "home"), "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and result.stderr.startswith("ghost: ")
    assert "Traceback" not in result.stderr
