"""The terminal client, run as a real `ghost` subprocess against a real Ghost on the fake upstream."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer, clean_env, free_port

CLI_TIMEOUT = 60


def run_cli(ghost: GhostServer | None, *args: str, key: str | None = None, url: str | None = None,
            stdin: str | None = "", cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = clean_env({"GHOST_URL": url or (ghost.url if ghost else ""),
                     "GHOST_API_KEY": key if key is not None else (ghost.api_key if ghost else "")})
    return subprocess.run([sys.executable, "-m", "ghost", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=CLI_TIMEOUT, cwd=cwd)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ghost: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.stderr


def user_messages(upstream: FakeUpstream, index: int = -1) -> list[str]:
    messages = upstream.chat_requests()[index]["body"]["messages"]
    return [m["content"] for m in messages if m["role"] == "user"]


# --- chat --------------------------------------------------------------------------------------------

def test_one_shot_chat_prints_the_answer(ghost: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="The answer is 42."))
    result = run_cli(ghost, "chat", "What", "is", "the", "answer?")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "The answer is 42.\n"  # piped: the answer only, no colour codes
    assert user_messages(upstream) == ["What is the answer?"]
    assert upstream.chat_requests()[-1]["body"]["stream"] is True


def test_the_answer_is_printed_as_written(ghost: GhostServer, upstream: FakeUpstream) -> None:
    text = "Use [bold]x[/bold] and :smile: in C:\\path, see https://example.com/a_b"
    upstream.script(Reply(content=text))
    result = run_cli(ghost, "chat", "show me")
    assert result.stdout == text + "\n"


def test_tool_activity_goes_apart_from_the_answer(ghost: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="", tool_calls=[{"name": "list_files", "arguments": {"path": "."}}]),
                    Reply(content="Nothing there."))
    result = run_cli(ghost, "chat", "what files?")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Nothing there.\n"
    assert "→ list_files" in result.stderr
    assert "\x1b[" not in result.stdout + result.stderr


def test_chat_reads_a_piped_question(ghost: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="Piped answer."))
    result = run_cli(ghost, "chat", stdin="a question\nover two lines\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Piped answer.\n"
    assert user_messages(upstream) == ["a question\nover two lines"]


def test_an_error_inside_the_stream_is_one_line_and_fails(ghost: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="this breaks off half way through", fail_after=3))
    result = run_cli(ghost, "chat", "go")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("ghost: the answer failed")


def interactive(ghost: GhostServer, lines: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `ghost chat` with a terminal as stdin (so it is interactive) and type `lines`."""
    master, slave = pty.openpty()
    env = clean_env({"GHOST_URL": ghost.url, "GHOST_API_KEY": ghost.api_key})
    process = subprocess.Popen([sys.executable, "-m", "ghost", "chat"], stdin=slave, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    os.close(slave)
    try:
        for line in lines:
            os.write(master, (line + "\n").encode())
        stdout, stderr = process.communicate(timeout=CLI_TIMEOUT)
    finally:
        os.close(master)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_interactive_chat_keeps_the_conversation(ghost: GhostServer, upstream: FakeUpstream,
                                                  tmp_path: Path) -> None:
    upstream.script(Reply(content="First answer."), Reply(content="Second answer."))
    lines = ["first question", "/help", "/load missing.zip", "second question", "/exit"]
    result = interactive(ghost, lines, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "First answer." in result.stdout and "Second answer." in result.stdout
    assert "/save FILE" in result.stderr
    assert "ghost: no such file: missing.zip" in result.stderr  # shown, and the session goes on
    second = upstream.chat_requests()[-1]["body"]["messages"]
    turns = [(m["role"], m["content"]) for m in second if m["role"] != "system"]
    assert turns == [("user", "first question"), ("assistant", "First answer."),
                     ("user", "second question")]


def test_interactive_save_and_load_carry_the_conversation(ghost: GhostServer, upstream: FakeUpstream,
                                                          tmp_path: Path) -> None:
    upstream.script(Reply(content="Remembered."))
    saved = interactive(ghost, ["remember this", "/save ws.zip", "/exit"], tmp_path)
    assert saved.returncode == 0, saved.stderr
    with zipfile.ZipFile(tmp_path / "ws.zip") as archive:
        history = json.loads(archive.read("session.json"))["chat_history"]
    assert [m["content"] for m in history] == ["remember this", "Remembered."]

    upstream.script(Reply(content="Continued."))
    loaded = interactive(ghost, ["/load ws.zip", "and now?", "/exit"], tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    assert "2 messages" in loaded.stderr
    assert user_messages(upstream) == ["remember this", "and now?"]


# --- files and workspace ------------------------------------------------------------------------------

def test_upload_and_download_round_trip(ghost: GhostServer, tmp_path: Path) -> None:
    original = tmp_path / "data.bin"
    original.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    up = run_cli(ghost, "upload", str(original), "cli/docs")
    assert up.returncode == 0, up.stderr
    assert "cli/docs/data.bin" in up.stderr

    down = run_cli(ghost, "download", "cli/docs/data.bin", str(tmp_path / "copy.bin"))
    assert down.returncode == 0, down.stderr
    assert (tmp_path / "copy.bin").read_bytes() == original.read_bytes()
    assert not list(tmp_path.glob(".*part*"))  # no temporary file left behind

    here = run_cli(ghost, "download", "cli/docs/data.bin", cwd=tmp_path / "..")
    assert here.returncode == 0 and (tmp_path.parent / "data.bin").read_bytes() == original.read_bytes()
    (tmp_path.parent / "data.bin").unlink()


def test_download_to_stdout(ghost: GhostServer, tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("plain text\n")
    assert run_cli(ghost, "upload", str(note), "cli").returncode == 0
    result = run_cli(ghost, "download", "cli/note.txt", "-")
    assert result.returncode == 0 and result.stdout == "plain text\n"


def test_workspace_save_and_load_round_trip(ghost: GhostServer, tmp_path: Path) -> None:
    page = tmp_path / "page.txt"
    page.write_text("version one")
    assert run_cli(ghost, "upload", str(page), "cli-ws").returncode == 0
    saved = run_cli(ghost, "workspace", "save", str(tmp_path / "ws.zip"))
    assert saved.returncode == 0, saved.stderr
    assert zipfile.is_zipfile(tmp_path / "ws.zip")

    page.write_text("version two")
    assert run_cli(ghost, "upload", str(page), "cli-ws").returncode == 0
    loaded = run_cli(ghost, "workspace", "load", str(tmp_path / "ws.zip"))
    assert loaded.returncode == 0, loaded.stderr
    assert "loaded" in loaded.stderr

    back = run_cli(ghost, "download", "cli-ws/page.txt", "-")
    assert back.stdout == "version one"


def test_workspace_save_into_a_directory_uses_the_servers_name(ghost: GhostServer, tmp_path: Path) -> None:
    result = run_cli(ghost, "workspace", "save", str(tmp_path))
    assert result.returncode == 0, result.stderr
    [archive] = tmp_path.glob("workspace_*.zip")
    assert zipfile.is_zipfile(archive)


# --- one-line errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["chat", "hi"], ["workspace", "save", "-"], ["download", "x.txt", "-"]])
def test_a_bad_key_is_a_one_line_error(ghost: GhostServer, args: list[str]) -> None:
    result = run_cli(ghost, *args, key="wrong-key")
    assert_one_line_error(result, "refused the API key")
    assert result.stdout == ""


def test_a_bad_key_on_upload_is_a_one_line_error(ghost: GhostServer, tmp_path: Path) -> None:
    small = tmp_path / "small.txt"
    small.write_text("x")
    assert_one_line_error(run_cli(ghost, "upload", str(small), key="wrong-key"), "refused the API key")


@pytest.mark.parametrize("args", [["chat", "hi"], ["workspace", "save", "out.zip"], ["download", "x", "-"]])
def test_ghost_not_running_is_a_one_line_error(args: list[str], tmp_path: Path) -> None:
    result = run_cli(None, *args, url=f"http://127.0.0.1:{free_port()}", key="k", cwd=tmp_path)
    assert_one_line_error(result, "cannot reach Ghost", "ghost serve")
    assert not list(tmp_path.iterdir())


def test_missing_files_are_one_line_errors(ghost: GhostServer, tmp_path: Path) -> None:
    assert_one_line_error(run_cli(ghost, "upload", str(tmp_path / "nope.txt")), "no such file")
    assert_one_line_error(run_cli(ghost, "workspace", "load", str(tmp_path / "nope.zip")), "no such file")
    result = run_cli(ghost, "download", "no/such/file.txt", str(tmp_path / "out.txt"))
    assert_one_line_error(result, "not found")
    assert not (tmp_path / "out.txt").exists()
    assert_one_line_error(run_cli(ghost, "download", "../etc/passwd", "-"), "'..' is not allowed")


@pytest.fixture(scope="module")
def small_ghost(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    server = GhostServer("--upstream-url", upstream.url, "--upload-max-bytes", "65536",
                         home=tmp_path_factory.mktemp("ghost-small"))
    with server:
        yield server


@pytest.mark.parametrize("size", [70 * 1024, 8 * 1024 * 1024])
def test_a_file_too_large_is_a_one_line_error(small_ghost: GhostServer, tmp_path: Path, size: int) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * size)
    assert_one_line_error(run_cli(small_ghost, "upload", str(big)), "too large")
