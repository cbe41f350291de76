"""`ghost serve`: its help documents every setting, and bad settings or an unreachable store stop it
with a clear message."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ghost.config import Settings
from ghost.store.reachable import _one_line
from ghost.testing.postgres import PostgresServer
from ghost.testing.server import clean_env, free_port


def run_ghost(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ghost", *args], env=clean_env({"COLUMNS": "100"}),
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def help_text() -> str:
    result = run_ghost("serve", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # undo argparse's line wrapping
    return text[text.index("options:"):]  # the flag list, not the usage line


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_help_documents_every_setting(help_text: str, name: str) -> None:
    field = Settings.model_fields[name]
    flag = "--" + name.replace("_", "-")
    assert re.search(rf"{re.escape(flag)}\b", help_text), flag
    entry = help_text[help_text.index(flag):]
    entry = entry[:entry.index("]") + 1]
    assert " ".join(field.description.split()) in help_text
    assert f"env GHOST_{name.upper()}" in entry
    assert "default:" in entry
    if field.default not in (None, ""):
        assert str(field.default) in entry, entry


def test_help_shows_the_real_defaults(help_text: str) -> None:
    assert "default: 127.0.0.1" in help_text or "default: '127.0.0.1'" in help_text
    assert "default: 11435" in help_text
    assert "default: 300.0" in help_text
    assert "ghost-secret-123" in help_text  # named as a weak key, no longer the default
    assert "generated at first start" in help_text
    assert "'None'" not in help_text  # an unset default reads as such, not as a Python repr


@pytest.mark.parametrize("args,message", [
    (["--port", "not-a-port"], "port"),
    (["--read-timeout", "-1"], "read_timeout"),
    (["--proxy-max-body-bytes", "10"], "proxy_max_body_bytes"),
])
def test_invalid_setting_exits_with_a_message(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_ghost("serve", "--home", str(tmp_path), *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_environment_variable_is_read(tmp_path: Path) -> None:
    # Refused on a public bind with the env's empty key: proves GHOST_HOST and GHOST_API_KEY were read.
    env = clean_env({"GHOST_HOST": "0.0.0.0", "GHOST_API_KEY": ""})
    result = subprocess.run([sys.executable, "-m", "ghost", "serve", "--port", str(free_port()),
                             "--home", str(tmp_path)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "empty API key" in result.stderr


# --- a store it cannot reach: one line, not a traceback ---------------------------------------------


def test_an_unreachable_database_stops_serve_with_one_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    result = run_ghost("serve", "--home", str(tmp_path), "--port", str(free_port()),
                       "--database-url", f"postgresql://bob:pw-s3cret@127.0.0.1:{port}/ghost")
    assert result.returncode == 1
    said = [line for line in result.stderr.splitlines() if line.startswith("ghost: ")]
    assert len(said) == 1, result.stderr  # the log lines before it are the key's
    assert said[0].startswith(f"ghost: cannot connect to the database postgresql://bob@127.0.0.1:{port}/ghost: ")
    assert "Connection refused" in said[0]
    assert "Traceback" not in result.stderr and "Application startup failed" not in result.stderr
    assert "pw-s3cret" not in result.stderr


def test_a_database_the_server_refuses_is_named_at_once(tmp_path: Path, postgres: PostgresServer) -> None:
    # A real server answering "no such database": said at once (no waiting as for one starting up).
    result = run_ghost("serve", "--home", str(tmp_path), "--port", str(free_port()),
                       "--database-url", postgres.url("no_such_db"))
    assert result.returncode == 1
    assert 'database "no_such_db" does not exist' in result.stderr
    assert "Traceback" not in result.stderr


def test_a_password_the_driver_repeats_is_cut_out() -> None:
    # The driver's messages do not carry the password today; should one ever do, it is not shown.
    planted = Exception("connection to server at 'h' failed: password pw-s3cret rejected\n  try again")
    assert _one_line(planted, ["pw-s3cret"]) == "connection to server at 'h' failed: password *** rejected try again"
