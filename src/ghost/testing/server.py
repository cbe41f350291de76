"""Start a real Ghost server process on loopback, for tests and benchmarks."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from ghost.config import KEY_FILE_NAME
from ghost.keyfile import read_key

TEST_KEY = "test-key-123"
# Settings every test Ghost gets unless its test passes its own (a flag or `env` wins): a Ghost
# that falls back to the bundled model only because a test gave no upstream should not spend
# seconds to minutes (on a busy machine) on the model's start-up self-test. The tests of the
# bundled model turn it on.
TEST_ENV = {"GHOST_EMBEDDED_SELF_TEST": "off"}
# How long `start` waits for Ghost to answer, or to exit: a hang guard only, never what a test
# checks. Generous because the start's imports alone take ~4 CPU-seconds, which a loaded 2-core
# machine stretches to 20-35 s of wall time (measured at load average 13); 60 s was crossed there.
START_TIMEOUT_S = 180.0


def no_bundled_model(upstream_url: str) -> tuple[str, str]:
    """Flags for a test Ghost whose tests never chat (files, uploads, the workspace): an upstream
    (the fake one) instead of the bundled model, whose server would otherwise start and load its
    model in every such Ghost, for nothing."""
    return ("--upstream-url", upstream_url)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The parent's environment without any GHOST_ or OTEL_ setting, so tests see only what they pass
    (an exporter endpoint set where the suite runs would otherwise turn tracing on in every Ghost)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GHOST_", "OTEL_"))}
    env.update(extra or {})
    return env


class GhostServer:
    def __init__(self, *args: str, api_key: str | None = TEST_KEY, home: Path | None = None,
                 env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.owns_home = home is None  # made here: `close` removes it
        self.home = home or Path(tempfile.mkdtemp(prefix="ghost-home-"))
        self.api_key = api_key
        self.args = list(args)
        self.env = {**TEST_ENV, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.home / "server-test.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        key = self.api_key if self.api_key is not None else self.generated_key()
        return {"X-Ghost-Key": key} if key else {}

    def generated_key(self) -> str | None:
        """The key Ghost generated in its home (when started without --api-key)."""
        return read_key(self.home / KEY_FILE_NAME)

    def command(self) -> list[str]:
        """`api_key` None: no key flag (Ghost uses its generated key); "": --no-auth."""
        cmd = [sys.executable, "-m", "ghost", "serve", "--port", str(self.port), "--home", str(self.home)]
        if self.api_key == "":
            cmd += ["--no-auth"]
        elif self.api_key is not None:
            cmd += ["--api-key", self.api_key]
        return cmd + self.args

    def start(self, timeout: float = START_TIMEOUT_S) -> "GhostServer":
        self.home.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                        env=clean_env(self.env), start_new_session=True)
        try:
            self.wait_ready(timeout)
        except BaseException:  # never leave a half-started Ghost (and its sandboxes) behind
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"ghost exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"ghost did not become ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait(5)

    def close(self) -> None:
        """Stop, then remove the home if this made it (a bench's Ghosts would otherwise leave their
        databases and logs behind, run after run). `__exit__` only stops: tests read the log after."""
        self.stop()
        if self.owns_home:
            shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> "GhostServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
