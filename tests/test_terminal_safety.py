"""The `ghost` client never lets text from Ghost drive the user's terminal (issue 21): escape
sequences in model text, tool activity and error messages are made visible and inert, in a real
terminal (tmux) as well as piped."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ghost.client.terminal import neutralise
from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer, clean_env

CLI_TIMEOUT = 60
CLEAR = "\x1b[2J\x1b[H"
LINK = "\x1b]8;;http://evil.example/\x1b\\click here\x1b]8;;\x1b\\"
CLIPBOARD = "\x1b]52;c;ZXZpbA==\x07"  # base64 "evil"
FAKE_PROMPT = "\r› run rm -rf ~ ? [y] "
DCS = "\x1bP+q544e\x1b\\"
C1_CSI = "\x9b31mred"
HOSTILE = f"START {CLEAR}{LINK} {CLIPBOARD}{FAKE_PROMPT}{DCS}{C1_CSI} END"


# --- the neutraliser ---------------------------------------------------------------------------------

@pytest.mark.parametrize("raw,shown", [
    (CLEAR, "\\x1b[2J\\x1b[H"),
    (LINK, "\\x1b]8;;http://evil.example/\\x1b\\click here\\x1b]8;;\\x1b\\"),
    (CLIPBOARD, "\\x1b]52;c;ZXZpbA==\\x07"),
    ("\rfake", "\\x0dfake"),
    ("a\bb\x00c\x7fd", "a\\x08b\\x00c\\x7fd"),
    ("\x9b2J \x9d52;c;x\x9c \x90q\x9c \x85", "\\u009b2J \\u009d52;c;x\\u009c \\u0090q\\u009c \\u0085"),
    ("\u202eevil\u2066", "\\u202eevil\\u2066"),
])
def test_control_sequences_become_visible_text(raw: str, shown: str) -> None:
    assert neutralise(raw) == shown
    assert all(c.isprintable() for c in neutralise(raw))


@pytest.mark.parametrize("text", ["plain", "two\nlines\tand a tab", "café 漢字 😀 ∑ — “quotes”", "[bold]x[/bold]", ""])
def test_ordinary_text_is_unchanged(text: str) -> None:
    assert neutralise(text) == text


def test_a_windows_line_ending_is_a_newline() -> None:
    assert neutralise("one\r\ntwo") == "one\ntwo"


# --- `ghost chat`, piped -------------------------------------------------------------------------------

def run_cli(ghost: GhostServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_env({"GHOST_URL": ghost.url, "GHOST_API_KEY": ghost.api_key})
    return subprocess.run([sys.executable, "-m", "ghost", *args], input="", capture_output=True, text=True,
                          env=env, timeout=CLI_TIMEOUT)


def assert_inert(output: str) -> None:
    assert not any(ord(c) < 0x20 and c not in "\n\t" or 0x7F <= ord(c) <= 0x9F for c in output), repr(output)


def test_piped_chat_prints_model_text_and_tool_activity_inert(ghost: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="", tool_calls=[{"name": "list_files", "arguments": {"path": f"x{CLEAR}{LINK}"}}],
                          reasoning=f"thinking {CLIPBOARD}"),
                    Reply(content=HOSTILE))
    result = run_cli(ghost, "chat", "go")
    assert result.returncode == 0, result.stderr
    assert_inert(result.stdout)
    assert_inert(result.stderr)
    assert result.stdout == neutralise(HOSTILE) + "\n"
    assert "list_files" in result.stderr and "thinking \\x1b]52;c;ZXZpbA==\\x07" in result.stderr


def test_an_error_message_from_the_server_is_printed_inert(ghost: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(status=400, body='{"error": {"message": "bad \\u001b[2J\\u001b]52;c;ZXZpbA==\\u0007", '
                                           '"type": "invalid_request_error"}}'))
    result = run_cli(ghost, "chat", "go")
    assert result.returncode != 0
    assert_inert(result.stderr)
    assert "Traceback" not in result.stderr


# --- `ghost chat` in a real terminal (tmux) ---------------------------------------------------------------

class Tmux:
    """A tmux server of this test's own (its own socket), which accepts OSC 52 into its buffers."""

    def __init__(self, tmp: Path) -> None:
        self.socket = f"ghost-test-{uuid.uuid4().hex[:8]}"
        self.conf = tmp / "tmux.conf"
        self.conf.write_text("set -g set-clipboard on\nset -g history-limit 2000\n")

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, "-f", str(self.conf), *args], capture_output=True,
                              text=True, timeout=30).stdout

    def start(self, name: str, command: list[str], env: dict[str, str]) -> None:
        exports = [f"{key}={value}" for key, value in env.items()]
        self("new-session", "-d", "-s", name, "-x", "160", "-y", "40", "env", "-i", *exports, *command)

    def screen(self, name: str) -> str:
        return self("capture-pane", "-p", "-t", name)

    def buffers(self) -> str:
        return self("list-buffers")

    def wait_for(self, name: str, text: str, timeout: float = CLI_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen(name)
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared on the screen:\n{self.screen(name)}")

    def stop(self) -> None:
        self("kill-server")


@pytest.fixture()
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed: `make system-deps` installs it")
    terminal = Tmux(tmp_path)
    yield terminal
    terminal.stop()


def test_the_tmux_probe_sees_a_raw_sequence_clear_the_screen_and_write_the_clipboard(tmux: Tmux) -> None:
    script = "printf 'MARKER\\n'; sleep 0.5; printf '\\033[2J\\033[H\\033]52;c;cHJvYmU=\\007AFTER\\n'; sleep 60"
    tmux.start("probe", ["/bin/sh", "-c", script], {"PATH": "/usr/bin:/bin"})
    screen = tmux.wait_for("probe", "AFTER")
    assert "MARKER" not in screen  # the screen was cleared
    assert tmux.buffers().strip()  # and the clipboard (a tmux buffer) written


def test_interactive_chat_in_a_terminal_shows_escape_sequences_as_text(ghost: GhostServer, upstream: FakeUpstream,
                                                                     tmux: Tmux) -> None:
    upstream.script(Reply(content="", tool_calls=[{"name": "list_files", "arguments": {"path": f"dir{CLEAR}"}}]),
                    Reply(content=HOSTILE))
    env = clean_env({"GHOST_URL": ghost.url, "GHOST_API_KEY": ghost.api_key, "TERM": "xterm-256color"})
    tmux.start("chat", [sys.executable, "-m", "ghost", "chat"], env)
    tmux.wait_for("chat", "Ghost at")
    tmux("send-keys", "-t", "chat", "tell me", "Enter")
    screen = tmux.wait_for("chat", "END")
    assert "Ghost at" in screen and "tell me" in screen  # nothing cleared the screen
    assert "\\x1b[2J" in screen and "\\x1b]8;;http://evil.example/" in screen  # shown, not obeyed
    assert "\\x0d› run rm -rf ~" in screen  # no carriage return painted a prompt
    assert tmux.buffers().strip() == ""  # the clipboard was not written
    tmux("send-keys", "-t", "chat", "C-d")
