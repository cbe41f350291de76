"""Start a stdio MCP server: in a bubblewrap sandbox like `execute`'s (the default), or on the host.

Inside the sandbox the server sees what sandboxed code sees (the system read-only, a private
/tmp, no network unless its entry says `"network": true`) plus, read-only, Ghost's Python
environment and the directory of its program, so that a server installed next to Ghost
(`pip install mcp-server-time`) runs. Its only writable directory is /sandbox: its own
directory under GHOST_HOME/mcp/<name>, or the agent's sandbox with `"workdir": "sandbox"`.
Ghost's home, the user's files and other servers' directories are not there. The same
per-process limits as a sandbox run apply (CPU seconds, address space, file size, open files,
processes), but not the wall-clock timeout: a server runs as long as Ghost does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from ghost.errors import SandboxError
from ghost.mcp.config import StdioServer
from ghost.sandbox.base import Executor
from ghost.sandbox.bwrap import BwrapExecutor
from ghost.sandbox.env import sandbox_env
from ghost.sandbox.launch import Sandbox
from ghost.sandbox.layout import SANDBOX_MOUNT, TMP_MOUNT
from ghost.sandbox.root import prepare_sandbox_root
from ghost.sandbox.supervise import OutputPipes, spawn
from ghost.sandbox.unavailable import UnavailableExecutor

STOP_GRACE_S = 1.0  # after stdin closes, how long a server may take to exit before it is killed


def search_path() -> str:
    """Where a server's command is looked up: Ghost's own environment first, then the system's."""
    return os.pathsep.join([str(Path(sys.prefix) / "bin"), "/usr/local/bin", "/usr/bin", "/bin"])


def resolve_command(command: str) -> Path:
    found = shutil.which(command, path=search_path()) if os.sep not in command else command
    if found is None or not os.access(found, os.X_OK) or not Path(found).is_file():
        raise SandboxError(f"command {command!r} not found (looked in {search_path()})")
    return Path(os.path.abspath(found))


@dataclass
class ServerProcess:
    """A started server: its stdin, the read ends of its stdout and stderr (ours to close)."""

    stdin: asyncio.StreamWriter
    stdout_fd: int
    stderr_fd: int
    process: asyncio.subprocess.Process
    sandbox: Sandbox | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    async def stop(self) -> None:
        """Close its stdin (the MCP way to ask a stdio server to exit), then kill what is left."""
        with contextlib.suppress(OSError, RuntimeError):
            self.stdin.close()
        with contextlib.suppress(TimeoutError, ProcessLookupError):
            await asyncio.wait_for(asyncio.shield(self.process.wait()), STOP_GRACE_S)
        if self.sandbox is not None:
            await self.sandbox.discard(promptly=True)  # kills the whole sandbox and its cgroup
        else:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                await self.process.wait()


async def start_server(config: StdioServer, executor: Executor, workdir: Path) -> ServerProcess:
    program = resolve_command(config.command)
    if config.sandbox:
        return await _start_sandboxed(config, program, executor, workdir)
    return await _start_on_host(config, program, workdir)


def server_env(config: StdioServer, home: str) -> dict[str, str]:
    """Built from nothing like a sandbox run's, plus the entry's own variables."""
    return {**sandbox_env(home=home, tmp=TMP_MOUNT), "PATH": search_path(), **config.env}


async def _start_sandboxed(config: StdioServer, program: Path, executor: Executor, workdir: Path) -> ServerProcess:
    if not isinstance(executor, BwrapExecutor):
        reason = f": {executor.reason}" if isinstance(executor, UnavailableExecutor) else ""
        raise SandboxError(f'bubblewrap is not available (sandbox backend {executor.name!r}{reason}), so '
                           f'this server cannot be sandboxed; set "sandbox": false in its entry to run it '
                           f'unsandboxed')
    base = executor.layout_with()
    mounts = dict.fromkeys([*base.extra_ro, *_python_prefixes(), program.parent])
    layout = executor.layout_with(sandbox_root=workdir, network=config.network, extra_ro=tuple(mounts),
                                  env=server_env(config, TMP_MOUNT))
    sandbox = await executor.start_detached(layout, [str(program), *config.args])
    assert sandbox.process.stdin is not None
    # Duplicates: the Sandbox closes its own ends when it is discarded, the transport closes these.
    return ServerProcess(sandbox.process.stdin, os.dup(sandbox.pipes.out_r), os.dup(sandbox.pipes.err_r),
                         sandbox.process, sandbox)


def _python_prefixes() -> list[Path]:
    """Ghost's environment and the Python it is built on, where they lie outside /usr."""
    prefixes = {Path(sys.prefix), Path(sys.base_prefix), Path(os.path.realpath(sys.base_prefix))}
    return [p for p in sorted(prefixes) if not str(p).startswith("/usr/")]


async def _start_on_host(config: StdioServer, program: Path, workdir: Path) -> ServerProcess:
    pipes = OutputPipes()
    try:
        process = await spawn(str(program), *config.args, stdin=asyncio.subprocess.PIPE, stdout=pipes.out_w,
                              stderr=pipes.err_w, cwd=workdir, env=server_env(config, str(workdir)),
                              start_new_session=True)
    except OSError as exc:
        pipes.close()
        raise SandboxError(f"cannot start {config.command!r}: {exc.strerror or exc}") from exc
    finally:
        pipes.close_child_ends()
    assert process.stdin is not None
    server = ServerProcess(process.stdin, os.dup(pipes.out_r), os.dup(pipes.err_r), process)
    pipes.close()
    return server


def workdir_for(config: StdioServer, mcp_home: Path, sandbox_root: Path) -> Path:
    """The host directory the server gets as /sandbox (created if missing)."""
    if config.workdir == "sandbox":
        return sandbox_root
    directory = mcp_home / config.name
    prepare_sandbox_root(directory)  # the sandbox identity's, like the sandbox folder itself
    return directory


__all__ = ["ServerProcess", "start_server", "workdir_for", "resolve_command", "SANDBOX_MOUNT"]
