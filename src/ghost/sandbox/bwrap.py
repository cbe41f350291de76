"""The isolating backend: every run in a fresh bubblewrap sandbox.

Start-up handshake, so that limits hold before any sandboxed code runs: bubblewrap is started
with `--info-fd` (it reports the pid of the sandbox's first process, already inside the new
namespaces) and `--block-fd` (that process waits for a byte before going on). Ghost then sets the
rlimits on that pid with prlimit(2) — inside the new user namespace, so RLIMIT_NPROC counts only
this run's processes, not every process of Ghost's user — and, when it can, moves the pid into a
fresh `pids` cgroup (the only process limit the kernel applies to root). Then it releases it.
Everything the command forks inherits both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path

from ghost.errors import SandboxError
from ghost.sandbox.base import ExecResult, Executor, Limits
from ghost.sandbox.cgroup import PidsCgroups, RunCgroup
from ghost.sandbox.layout import Layout
from ghost.sandbox import rlimits
from ghost.sandbox.supervise import OutputPipes, supervise

HANDSHAKE_TIMEOUT_S = 10.0
PIPE_BUFFER_BYTES = 65536  # Linux default pipe capacity
CGROUP_REMOVE_TRIES = 100


class BwrapExecutor(Executor):
    """Runs commands in a bubblewrap sandbox.

    Isolates: filesystem (only the sandbox directory is writable and is the working directory
    /sandbox; the system is mounted read-only; nothing else of the host — Ghost's home with its
    database and logs, other users' files, /etc/shadow — is visible); network (none, unless
    the network setting is on); processes (own PID namespace: Ghost and other processes are
    invisible, and when the run ends or is killed every process in it dies); IPC, UTS and user
    namespaces (no capabilities, no nested user namespaces); environment (scrubbed: no Ghost key,
    setting or path); resources (CPU seconds, address space, file size and open files per
    process; processes per run; wall-clock time; output size; a private /tmp of bounded size).

    Does not isolate: the kernel itself (a kernel exploit escapes any namespace sandbox); disk
    space (the sandbox directory can fill its filesystem); total memory across the run's
    processes beyond (processes x address space); CPU contention with Ghost.
    """

    name = "bubblewrap"
    isolated = True

    def __init__(self, bwrap: str, layout: Layout, python: str, bash: str, limits: Limits,
                 max_concurrent: int, cgroups: PidsCgroups | None) -> None:
        super().__init__(limits, max_concurrent)
        self._bwrap = bwrap
        self._layout_args = layout.args()
        self._layout = layout
        self._python = python
        self._bash = bash
        self._cgroups = cgroups

    @property
    def python(self) -> str:
        return self._python

    @property
    def bash(self) -> str:
        return self._bash

    @property
    def process_limit(self) -> str:
        if self._cgroups is not None:
            return "cgroup"
        return "rlimit" if os.getuid() != 0 else "none"

    def info(self) -> dict[str, object]:
        return {**super().info(), "network": self._layout.network, "process_limit": self.process_limit,
                "python": self._python, "limits": self.limits.as_dict()}

    async def _run(self, argv: list[str], stdin: bytes, limits: Limits) -> ExecResult:
        with _Handshake(self._layout_args) as handshake, OutputPipes() as pipes:
            command = [self._bwrap, "--args", str(handshake.args_r), "--info-fd", str(handshake.info_w),
                       "--block-fd", str(handshake.block_r), "--", *argv]
            try:
                process = await asyncio.create_subprocess_exec(
                    *command, stdin=asyncio.subprocess.PIPE, stdout=pipes.out_w, stderr=pipes.err_w,
                    pass_fds=handshake.child_ends(), start_new_session=True,
                    env={"PATH": "/usr/bin:/bin"}, cwd="/")
            except OSError as exc:
                raise SandboxError(f"cannot start bubblewrap: {exc}") from exc
            finally:
                handshake.close_child_ends()
                pipes.close_child_ends()
            return await self._supervised(process, handshake, pipes, stdin, limits)

    async def _supervised(self, process: asyncio.subprocess.Process, handshake: "_Handshake",
                          pipes: OutputPipes, stdin: bytes, limits: Limits) -> ExecResult:
        cgroup: RunCgroup | None = None

        def kill() -> None:
            if process.returncode is None:  # not yet reaped, so the pid is still ours
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            if cgroup is not None:
                cgroup.kill_all()

        try:
            child = await _read_child_pid(handshake.info_r)
            cgroup = self._confine(child, limits)
            handshake.release()
            return await supervise(process, pipes, stdin, limits, kill, decode_bwrap_exit)
        except SandboxError as exc:
            kill()
            raise SandboxError(f"{exc.message}; bubblewrap said: {_stderr_excerpt(pipes)}") from exc
        except BaseException:
            kill()
            raise
        finally:
            await _reap(process, cgroup)

    def _confine(self, child: int, limits: Limits) -> RunCgroup | None:
        """Apply every limit to the waiting sandbox process before it runs anything."""
        try:
            rlimits.apply_to(child, rlimits.rlimits(limits, nproc=limits.max_processes))
            if self._cgroups is None:
                return None
            cgroup = self._cgroups.create(limits.max_processes)
        except OSError as exc:
            raise SandboxError(f"cannot apply sandbox limits: {exc}") from exc
        try:
            cgroup.add(child)
        except OSError as exc:
            cgroup.remove()
            raise SandboxError(f"cannot apply sandbox limits: {exc}") from exc
        return cgroup


def decode_bwrap_exit(returncode: int) -> tuple[int | None, int | None]:
    """bwrap exits 128+N when the command died of signal N, and -N if bwrap itself was killed."""
    if returncode < 0:
        return 128 - returncode, -returncode
    if returncode > 128 and returncode - 128 in signal.valid_signals():
        return returncode, returncode - 128
    return returncode, None


class _Handshake:
    """The pipes of the start-up handshake; each end closed exactly once.

    The layout's options go through `--args` rather than the command line: the sandbox can read
    its first process's /proc/1/cmdline, and the options name host paths (the sandbox directory
    in Ghost's home).
    """

    def __init__(self, layout_args: list[str]) -> None:
        self.args_r, args_w = os.pipe()
        self.info_r, self.info_w = os.pipe()
        self.block_r, self.block_w = os.pipe()
        self._open = {self.args_r, args_w, self.info_r, self.info_w, self.block_r, self.block_w}
        data = b"".join(os.fsencode(arg) + b"\0" for arg in layout_args)
        if len(data) > PIPE_BUFFER_BYTES:  # written before bwrap starts: it must fit the pipe
            self.__exit__()
            raise SandboxError("sandbox mount options too long")
        os.write(args_w, data)
        self._close(args_w)

    def child_ends(self) -> tuple[int, int, int]:
        return self.args_r, self.info_w, self.block_r

    def close_child_ends(self) -> None:
        self._close(self.args_r, self.info_w, self.block_r)

    def release(self) -> None:
        """Let the waiting sandbox process go on."""
        os.write(self.block_w, b"go")
        self._close(self.block_w)

    def _close(self, *fds: int) -> None:
        for fd in fds:
            if fd in self._open:
                self._open.discard(fd)
                os.close(fd)

    def __enter__(self) -> "_Handshake":
        return self

    def __exit__(self, *exc: object) -> None:
        self._close(*list(self._open))


async def _read_child_pid(fd: int) -> int:
    """The pid bwrap reports on --info-fd (JSON), read without blocking the event loop."""
    os.set_blocking(fd, False)
    data = b""
    try:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            while chunk := await _read_when_ready(fd):
                data += chunk
                with contextlib.suppress(ValueError):
                    return int(json.loads(data)["child-pid"])
    except TimeoutError as exc:
        raise SandboxError("bubblewrap did not start the sandbox in time") from exc
    raise SandboxError("bubblewrap exited before starting the sandbox")


async def _read_when_ready(fd: int) -> bytes:
    loop = asyncio.get_running_loop()
    readable = loop.create_future()
    loop.add_reader(fd, lambda: readable.done() or readable.set_result(None))
    try:
        await readable
    finally:
        loop.remove_reader(fd)
    return os.read(fd, 4096)


def _stderr_excerpt(pipes: OutputPipes) -> str:
    """What bwrap wrote before failing (it is dead, so the pipe holds all of it)."""
    os.set_blocking(pipes.err_r, False)
    with contextlib.suppress(OSError):
        return os.read(pipes.err_r, 2000).decode("utf-8", "replace").strip() or "(nothing)"
    return "(nothing)"


async def _reap(process: asyncio.subprocess.Process, cgroup: RunCgroup | None) -> None:
    """Wait for bwrap to be gone and the run's cgroup to be empty, then remove the cgroup."""
    with contextlib.suppress(ProcessLookupError):
        await asyncio.shield(process.wait())
    if cgroup is None:
        return
    for _ in range(CGROUP_REMOVE_TRIES):
        if cgroup.remove():
            return
        await asyncio.sleep(0.01)
    # Left behind: removed by the sweep at the next start (see PidsCgroups.sweep_stale).
