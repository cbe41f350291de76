"""Start one bubblewrap sandbox with every limit in force before anything runs in it.

The handshake: bubblewrap is started with `--info-fd` (it reports the pid of the sandbox's first
process, already inside the new namespaces) and `--block-fd` (that process waits for a byte
before going on). Ghost sets the rlimits on that pid with prlimit(2) — inside the new user
namespace, so RLIMIT_NPROC counts only this sandbox's processes, not every process of Ghost's
user — and, when it can, moves the pid into a fresh `pids` cgroup (the only process limit the
kernel applies to root). Then it releases it. Everything the command forks inherits both.

The layout's options go through `--args` rather than the command line: the sandbox can read its
first process's /proc/1/cmdline, and the options name host paths (the sandbox directory). The
seccomp filter goes through a pipe too (`--seccomp`).

Before each start the sandbox root's owner and mode are reset (`ghost.sandbox.root`), and when
Ghost is root the child drops to the sandbox identity before it execs bubblewrap
(`ghost.sandbox.identity.become`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ghost.errors import SandboxError
from ghost.sandbox import rlimits
from ghost.sandbox.base import ExecResult, Limits
from ghost.sandbox.cgroup import PidsCgroups, RunCgroup
from ghost.sandbox.identity import SandboxIdentity, become
from ghost.sandbox.root import ROOT_FLAGS, fix_root_fd
from ghost.sandbox.supervise import OutputPipes, spawn, supervise

HANDSHAKE_TIMEOUT_S = 10.0
PIPE_BUFFER_BYTES = 65536  # Linux default pipe capacity
CGROUP_REMOVE_TRIES = 100


def reset_root(path: Path, identity: SandboxIdentity | None) -> tuple[int, int]:
    """Reset the sandbox root's owner and mode (a warm sandbox is about to run in it); returns
    what a bind mount of it refers to, which changes if the directory is replaced."""
    fd = _open_root(path, identity)
    try:
        return _directory_of(fd)
    finally:
        os.close(fd)


@dataclass
class Sandbox:
    """One started sandbox: its bwrap process, output pipes, cgroup, and (when warm) the pipe
    on which its launcher waits for the command."""

    process: asyncio.subprocess.Process
    pipes: OutputPipes
    cgroup: RunCgroup | None
    directory: tuple[int, int]
    argv_w: int | None = None

    def kill(self) -> None:
        if self.process.returncode is None:  # not yet reaped, so the pid is still ours
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        if self.cgroup is not None:
            self.cgroup.kill_all()

    def send_argv(self, argv: list[str]) -> None:
        """Hand the waiting launcher its command (small: it fits the empty pipe in one write)."""
        assert self.argv_w is not None
        data = b"".join(os.fsencode(arg) + b"\0" for arg in argv)
        os.write(self.argv_w, data)
        self._close_argv()

    async def finish(self, stdin: bytes, limits: Limits) -> ExecResult:
        """Supervise the command to its end; whatever happens, leave nothing behind."""
        try:
            return await supervise(self.process, self.pipes, stdin, limits, self.kill, decode_bwrap_exit)
        except BaseException:
            self.kill()
            raise
        finally:
            await self.discard(promptly=True)

    async def discard(self, *, promptly: bool = False) -> None:
        """Kill and reap it; `promptly` leaves a cgroup whose tasks are still exiting to a
        background task instead of waiting for it."""
        if self.process.returncode is None:
            self.kill()
        self._close_argv()
        self.pipes.close()
        if self.process.stdin is not None:  # asyncio's wait() also waits for this pipe to close
            with contextlib.suppress(OSError, RuntimeError):
                self.process.stdin.close()
        await _reap(self.process, self.cgroup, promptly=promptly)

    def _close_argv(self) -> None:
        if self.argv_w is not None:
            os.close(self.argv_w)
            self.argv_w = None


async def start_sandbox(bwrap: list[str], layout_args: list[str], sandbox_root: Path, command: list[str],
                        limits: Limits, cgroups: PidsCgroups | None, *, argv_fd: bool = False,
                        identity: SandboxIdentity | None = None, stage_plan: list[Path] | None = None,
                        seccomp: bytes | None = None, shared_nproc: int = 0) -> Sandbox:
    """Start bwrap (`bwrap` is its command line up to the options) running `command`, confined
    and released. With `argv_fd`, a pipe's read end is passed in and its number appended to
    `command` (for the warm launcher). With `identity`, bwrap runs as that user (Ghost is root);
    `seccomp` is the filter program bwrap installs before the command starts.

    As the sandbox identity, the rlimits are set in the child before it execs bwrap (prlimit(2)
    on a process of another user needs CAP_SYS_RESOURCE, which root in a container often lacks);
    RLIMIT_NPROC then counts every process of the sandbox user, so it is `shared_nproc` (all
    runs and MCP servers together) and the pids cgroup holds each run to its own limit."""
    root_fd = _open_root(sandbox_root, identity)
    argv_r, argv_w = None, None
    pipes: OutputPipes | None = None
    try:
        directory = _directory_of(root_fd)
        argv_r, argv_w = os.pipe() if argv_fd else (None, None)
        extra = [str(argv_r)] if argv_r is not None else []
        pipes = OutputPipes()
        preexec = None
        if identity is not None:
            pairs = rlimits.rlimits(limits, nproc=shared_nproc or limits.max_processes)
            preexec = become(identity, stage_plan or [sandbox_root], root_fd, pairs)
        with _Handshake(layout_args, seccomp) as handshake:
            process = await _spawn(bwrap, handshake, pipes, [*command, *extra], argv_r, preexec)
            sandbox = Sandbox(process, pipes, None, directory, argv_w)
            argv_w = None  # the sandbox owns it now
            await _confine(sandbox, handshake, limits, cgroups, set_rlimits=identity is None)
            return sandbox
    except BaseException:
        if pipes is not None:
            pipes.close()
        if argv_w is not None:
            os.close(argv_w)
        raise
    finally:
        os.close(root_fd)
        if argv_r is not None:
            os.close(argv_r)


def _open_root(sandbox_root: Path, identity: SandboxIdentity | None) -> int:
    """The sandbox root, open, with its owner and mode reset: whatever sandboxed code did to it
    (chmod 0, chown) in an earlier run does not stop this one."""
    try:
        fd = os.open(sandbox_root, ROOT_FLAGS)
    except OSError as exc:
        raise SandboxError(f"cannot open the sandbox folder: {exc.strerror}") from exc
    try:
        fix_root_fd(fd, (identity.uid, identity.gid) if identity is not None else None)
    except OSError as exc:
        os.close(fd)
        raise SandboxError(f"cannot reset the sandbox folder's owner and mode: {exc.strerror}") from exc
    return fd


def _directory_of(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return info.st_dev, info.st_ino


async def _spawn(bwrap: list[str], handshake: "_Handshake", pipes: OutputPipes, command: list[str],
                 argv_r: int | None, preexec: Callable[[], None] | None) -> asyncio.subprocess.Process:
    argv = [*bwrap, "--args", str(handshake.args_r), "--info-fd", str(handshake.info_w),
            "--block-fd", str(handshake.block_r), "--", *command]
    keep = handshake.child_ends() + ((argv_r,) if argv_r is not None else ())
    try:
        return await spawn(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=pipes.out_w, stderr=pipes.err_w, pass_fds=keep,
            start_new_session=True, env={"PATH": "/usr/bin:/bin"}, cwd="/", preexec_fn=preexec)
    except OSError as exc:
        raise SandboxError(f"cannot start bubblewrap: {exc}") from exc
    except subprocess.SubprocessError as exc:  # only `preexec` raises these
        raise SandboxError("cannot switch to the sandbox user before starting bubblewrap (Ghost, as root, "
                           "needs CAP_SYS_ADMIN for a private mount and CAP_SETUID/CAP_SETGID): "
                           f"{exc}") from exc
    finally:
        handshake.close_child_ends()
        pipes.close_child_ends()


async def _confine(sandbox: Sandbox, handshake: "_Handshake", limits: Limits, cgroups: PidsCgroups | None,
                   *, set_rlimits: bool) -> None:
    """Apply every limit to the waiting sandbox process, then let it go on."""
    try:
        child = await _read_child_pid(handshake.info_r)
        if set_rlimits:
            rlimits.apply_to(child, rlimits.rlimits(limits, nproc=limits.max_processes))
        if cgroups is not None:
            sandbox.cgroup = cgroups.create(limits.max_processes, limits.run_memory_bytes)
            sandbox.cgroup.add(child)
        handshake.release()
    except (SandboxError, OSError) as exc:
        sandbox.kill()
        said = _stderr_excerpt(sandbox.pipes)
        await sandbox.discard()
        message = exc.message if isinstance(exc, SandboxError) else f"cannot apply sandbox limits: {exc}"
        raise SandboxError(f"{message}; bubblewrap said: {said}") from exc
    except BaseException:
        await sandbox.discard()
        raise


def decode_bwrap_exit(returncode: int) -> tuple[int | None, int | None]:
    """bwrap exits 128+N when the command died of signal N, and -N if bwrap itself was killed."""
    if returncode < 0:
        return 128 - returncode, -returncode
    if returncode > 128 and returncode - 128 in signal.valid_signals():
        return returncode, returncode - 128
    return returncode, None


class _Handshake:
    """The pipes of the start-up handshake; each end closed exactly once."""

    def __init__(self, layout_args: list[str], seccomp: bytes | None) -> None:
        self._open: set[int] = set()
        self.seccomp_r: int | None = None
        if seccomp is not None:
            self.seccomp_r, seccomp_w = self._pipe()
            layout_args = [*layout_args, "--seccomp", str(self.seccomp_r)]
            self._write_all(seccomp_w, seccomp)
        data = b"".join(os.fsencode(arg) + b"\0" for arg in layout_args)
        self.args_r, args_w = self._pipe()
        self.info_r, self.info_w = self._pipe()
        self.block_r, self.block_w = self._pipe()
        self._write_all(args_w, data)

    def _write_all(self, fd: int, data: bytes) -> None:
        """Written before bwrap starts, so it must fit the pipe; then the write end is closed."""
        if len(data) > PIPE_BUFFER_BYTES:
            self.__exit__()
            raise SandboxError("sandbox options too long")
        os.write(fd, data)
        self._close(fd)

    def _pipe(self) -> tuple[int, int]:
        read, write = os.pipe()
        self._open |= {read, write}
        return read, write

    def child_ends(self) -> tuple[int, ...]:
        ends = (self.args_r, self.info_w, self.block_r)
        return ends + ((self.seccomp_r,) if self.seccomp_r is not None else ())

    def close_child_ends(self) -> None:
        self._close(*self.child_ends())

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
    with contextlib.suppress(OSError, ValueError):
        os.set_blocking(pipes.err_r, False)
        return os.read(pipes.err_r, 2000).decode("utf-8", "replace").strip() or "(nothing)"
    return "(nothing)"


async def _reap(process: asyncio.subprocess.Process, cgroup: RunCgroup | None, *, promptly: bool) -> None:
    """Wait for bwrap to be gone, then remove the cgroup (later, if promptly and still busy)."""
    with contextlib.suppress(ProcessLookupError):
        await asyncio.shield(process.wait())
    if cgroup is None or cgroup.remove():
        return
    if not promptly:
        await _remove_later(cgroup)
        return
    task = asyncio.get_running_loop().create_task(_remove_later(cgroup))
    _cleanups.add(task)  # a reference, so the task is not collected half-way
    task.add_done_callback(_cleanups.discard)


_cleanups: set[asyncio.Task[None]] = set()


async def _remove_later(cgroup: RunCgroup) -> None:
    for _ in range(CGROUP_REMOVE_TRIES):
        await asyncio.sleep(0.01)
        if cgroup.remove():
            return
    # Left behind: removed by the sweep at the next start (see PidsCgroups.sweep_stale).


async def finish_cleanups() -> None:
    """Wait for cgroup removals still running in the background (at shutdown)."""
    if _cleanups:
        await asyncio.gather(*list(_cleanups), return_exceptions=True)
