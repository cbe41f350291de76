"""The toy MCP server (`mcp_toy_server.py`, written with the SDK) set up for tests: copied into a
Ghost home to run sandboxed over stdio, or started on its own over Streamable HTTP (`HttpToy`;
the `http_toy` fixture in conftest.py). Shared by every test that needs an MCP server of its own."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ghost.testing.server import free_port

TOY = Path(__file__).with_name("mcp_toy_server.py")
PYTHON = sys.executable  # Ghost's environment, which the sandbox mounts read-only


def install_toy(home: Path, name: str) -> Path:
    """The toy's script in `home`'s MCP folder `name` (seen as /sandbox/toy.py by its server)."""
    directory = home / "mcp" / name
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(TOY, directory / "toy.py")
    return directory / "toy.py"


def write_config(home: Path, servers: dict[str, Any]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "mcp.json").write_text(json.dumps({"mcpServers": servers}))


def toy(**extra: Any) -> dict[str, Any]:
    """An `mcpServers` entry running the installed toy over stdio."""
    return {"command": PYTHON, "args": ["/sandbox/toy.py"], **extra}


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout  # a hang guard, not a timing assertion
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class HttpToy:
    """The toy server on its own, over Streamable HTTP on a real uvicorn; can be stopped and
    started again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([PYTHON, str(TOY), "--http", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: accepts(self.port), "the HTTP toy server", timeout=120)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
