"""Reaching the bundled model server directly, as tests and benchmarks do.

The server answers only Ghost (`ghost.llm.embedded_gate`): its key is in its process environment,
which a test running as Ghost's user can read (as root, or Ghost's uid, can; nobody else)."""

from __future__ import annotations

from pathlib import Path

from ghost.llm.embedded_gate import KEY_ENV


def model_server_key(pid: int) -> str:
    """The key the model server with this pid was started with."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    prefix = KEY_ENV.encode() + b"="
    found = [entry[len(prefix):].decode() for entry in environ if entry.startswith(prefix)]
    if not found:
        raise LookupError(f"process {pid} has no {KEY_ENV} in its environment")
    return found[0]


def model_server_headers(pid: int) -> dict[str, str]:
    """The headers Ghost itself sends the model server with this pid."""
    return {"authorization": f"Bearer {model_server_key(pid)}"}
