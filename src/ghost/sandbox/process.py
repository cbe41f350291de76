"""The fallback backend: a plain child process. It limits, but it does NOT isolate."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from ghost.errors import SandboxError
from ghost.sandbox import rlimits
from ghost.sandbox.base import ExecResult, Executor, Limits
from ghost.sandbox.cgroup import PidsCgroups, RunCgroup
from ghost.sandbox.env import sandbox_env
from ghost.sandbox.supervise import OutputPipes, spawn, supervise


class ProcessExecutor(Executor):
    """Runs commands as ordinary child processes of Ghost, in the sandbox directory.

    Isolates nothing: the command runs as Ghost's user, sees the whole filesystem Ghost sees
    (its database and logs included), can write wherever that user can, has the network, and can
    read other processes' command lines from /proc. Use it only where bubblewrap cannot run.

    What it does give: a scrubbed environment (no Ghost key, setting or path); the sandbox
    directory as working directory; its own session and process group, killed as a whole at the
    wall-clock timeout, on an output flood or when the caller is cancelled; CPU seconds, address
    space, file size and open files per process; and a process limit — a `pids` cgroup when
    Ghost may create one, else RLIMIT_NPROC set to the user's current task count plus the limit
    (not enforced for root). A process that starts its own session escapes the group kill.
    """

    name = "process"
    isolated = False

    def __init__(self, sandbox_root: Path, tmp_dir: Path, python: str, bash: str, limits: Limits,
                 max_concurrent: int, cgroups: PidsCgroups | None) -> None:
        super().__init__(limits, max_concurrent, python=python, bash=bash, cgroups=cgroups)
        self._root = sandbox_root
        self._tmp_dir = tmp_dir
        self._max_concurrent = max_concurrent
        self._env = sandbox_env(home=str(tmp_dir), tmp=str(tmp_dir))

    def with_root(self, sandbox_root: Path) -> "ProcessExecutor":
        # This backend isolates nothing (see above): another user's folder does not change that.
        return ProcessExecutor(sandbox_root, self._tmp_dir, self._python, self._bash, self.limits,
                               self._max_concurrent, self._cgroups)

    def info(self) -> dict[str, object]:
        return {**super().info(), "network": True}

    async def _run(self, argv: list[str], stdin: bytes, limits: Limits) -> ExecResult:
        cgroup = self._cgroups.create(limits.max_processes, limits.run_memory_bytes) if self._cgroups else None
        try:
            return await self._run_in(argv, stdin, limits, cgroup)
        finally:
            if cgroup is not None:
                await _remove(cgroup)

    async def _run_in(self, argv: list[str], stdin: bytes, limits: Limits, cgroup: RunCgroup | None) -> ExecResult:
        nproc = None
        if cgroup is None and os.getuid() != 0:
            # RLIMIT_NPROC compares against every task of the user, Ghost's own threads included.
            nproc = await asyncio.to_thread(rlimits.tasks_of_user, os.getuid()) + limits.max_processes
        preexec = _preexec(rlimits.rlimits(limits, nproc=nproc), cgroup)
        with OutputPipes() as pipes:
            try:
                process = await spawn(
                    *argv, stdin=asyncio.subprocess.PIPE, stdout=pipes.out_w, stderr=pipes.err_w,
                    cwd=self._root, env=self._env, start_new_session=True, preexec_fn=preexec)
            except (OSError, subprocess.SubprocessError) as exc:
                raise SandboxError(f"cannot start {argv[0]}: {exc}") from exc
            finally:
                pipes.close_child_ends()
            return await self._supervised(process, pipes, stdin, limits, cgroup)

    async def _supervised(self, process: asyncio.subprocess.Process, pipes: OutputPipes, stdin: bytes,
                          limits: Limits, cgroup: RunCgroup | None) -> ExecResult:

        def kill() -> None:
            # The group outlives its leader while stragglers are in it, so this also works after exit.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            if cgroup is not None:
                cgroup.kill_all()

        try:
            return await supervise(process, pipes, stdin, limits, kill, decode_exit)
        finally:
            kill()
            with contextlib.suppress(ProcessLookupError):
                await asyncio.shield(process.wait())


def _preexec(pairs: list[tuple[int, tuple[int, int]]], cgroup: RunCgroup | None) -> Callable[[], None]:
    """Runs in the child between fork and exec: join the cgroup, then take on the limits."""
    procs = str(cgroup.path / "cgroup.procs") if cgroup is not None else None

    def preexec() -> None:
        _die_with_ghost()
        if procs is not None:
            fd = os.open(procs, os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
        rlimits.apply_here(pairs)

    return preexec


def _die_with_ghost() -> None:
    """PR_SET_PDEATHSIG: the kernel kills the command if Ghost dies first."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


PR_SET_PDEATHSIG = 1
try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:
    _LIBC = None


def decode_exit(returncode: int) -> tuple[int | None, int | None]:
    if returncode < 0:
        return 128 - returncode, -returncode
    return returncode, None


async def _remove(cgroup: RunCgroup) -> None:
    for _ in range(100):
        if cgroup.remove():
            return
        await asyncio.sleep(0.01)
