"""The isolating backend: every run in a fresh bubblewrap sandbox, one of them kept warm.

Starting a sandbox (namespaces, mounts, limits, the cgroup) costs several milliseconds before
the command even begins, so the executor starts the next one ahead of time: a sandbox whose
command is a tiny bash launcher that blocks reading a pipe. A run takes it, writes its argv into
that pipe, and the launcher execs it — inside a sandbox already confined. Each warm sandbox
serves exactly one run; it is never reused. It is skipped (a fresh one is started instead)
when a run asks for other limits, when its argv is large, or when the sandbox directory was
replaced since it was started (a bind mount would still show the old one).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from ghost.errors import SandboxError
from ghost.sandbox.base import ExecResult, Executor, Limits
from ghost.sandbox.cgroup import PidsCgroups
from ghost.sandbox.launch import Sandbox, finish_cleanups, reset_root, start_sandbox
from ghost.sandbox import seccomp as seccomp_filter
from ghost.sandbox.layout import Layout

log = logging.getLogger("ghost.sandbox")
# Reads NUL-separated arguments from the fd named in $1 (bash reads a pipe a byte at a time, so
# only small argvs go this way), closes it, and becomes the command.
LAUNCHER = ('fd=$1; args=(); while IFS= read -r -d "" arg <&"$fd"; do args+=("$arg"); done; '
            'eval "exec $fd<&-"; exec "${args[@]}"')
WARM_ARGV_MAX_BYTES = 16 * 1024
SHARED_NPROC_EXTRA = 256
CLOSE_TIMEOUT_S = 15.0  # how long closing waits for a warm sandbox still starting


class BwrapExecutor(Executor):
    """Runs commands in a bubblewrap sandbox.

    Isolates: filesystem (only the sandbox directory is writable and is the working directory
    /sandbox; the system is mounted read-only; nothing else of the host — Ghost's home with its
    database and logs, other users' files, /etc/shadow — is visible); network (none, unless
    the network setting is on); processes (own PID namespace: Ghost and other processes are
    invisible, and when the run ends or is killed every process in it dies); IPC, UTS and user
    namespaces (no capabilities, no nested user namespaces); environment (scrubbed: no Ghost key,
    setting or path); resources (CPU seconds, address space, file size and open files per
    process; processes per run; wall-clock time; output size; a private /tmp of bounded size);
    identity (when Ghost is root, the sandbox runs as the unprivileged sandbox user, never as
    root: see ghost.sandbox.identity); kernel interfaces (/proc/sys read-only; a seccomp filter
    denies keyring, ptrace, mount, bpf, perf, module, kexec, userfaultfd and namespace calls:
    ghost.sandbox.seccomp); setuid and setgid bits (no effect inside: no_new_privs, nosuid mounts).

    Does not isolate: the kernel itself (a kernel exploit escapes any namespace sandbox); disk
    space (the sandbox directory can fill its filesystem); total memory across the run's
    processes beyond (processes x address space); CPU contention with Ghost; the host path of
    the sandbox directory, which /proc/self/mountinfo shows (a name, not access).
    """

    name = "bubblewrap"
    isolated = True

    def __init__(self, bwrap: str, layout: Layout, python: str, bash: str, limits: Limits,
                 max_concurrent: int, cgroups: PidsCgroups | None, *, seccomp: bytes | None = None,
                 warm: bool = True) -> None:
        super().__init__(limits, max_concurrent, python=python, bash=bash, cgroups=cgroups)
        self._seccomp = seccomp if seccomp is not None else seccomp_filter.program()
        # As the sandbox identity, RLIMIT_NPROC counts all its processes: every run at once,
        # plus room for MCP servers (each run's own limit is the pids cgroup's).
        self._shared_nproc = limits.max_processes * max_concurrent + SHARED_NPROC_EXTRA
        self._bwrap = [bwrap]  # --die-with-parent: the sandbox dies with bwrap, bwrap with Ghost
        self._layout = layout
        self._layout_args = layout.args()
        self._stage_plan = layout.stage_plan()
        self._warm_enabled = warm and bash.endswith("bash")
        self._warm: asyncio.Task[Sandbox] | None = None
        self._max_concurrent = max_concurrent

    def with_root(self, sandbox_root: Path) -> "BwrapExecutor":
        layout = dataclasses.replace(self._layout, sandbox_root=sandbox_root)
        return BwrapExecutor(self._bwrap[0], layout, self._python, self._bash, self.limits, self._max_concurrent,
                             self._cgroups, warm=self._warm_enabled)

    def info(self) -> dict[str, object]:
        identity = self._layout.identity
        return {**super().info(), "network": self._layout.network, "warm_start": self._warm_enabled,
                "user": identity.describe() if identity is not None else f"Ghost's own (uid {os.getuid()})",
                "seccomp": f"{len(seccomp_filter.DENIED)} system calls denied",
                "proc_sys": "read-only"}

    @property
    def process_limit(self) -> str:
        # Started as the sandbox identity, RLIMIT_NPROC holds even when Ghost is root.
        if self._cgroups is None and self._layout.identity is not None:
            return "rlimit-shared"
        return super().process_limit

    async def _run(self, argv: list[str], stdin: bytes, limits: Limits) -> ExecResult:
        sandbox = await self._take_warm(argv, limits)
        if sandbox is not None and not await _handed_over(sandbox, argv):
            sandbox = None
        if sandbox is None:
            # A sandbox that cannot start fails here, with bubblewrap's words, and no warm one is
            # started after it: it would fail the same way, unwatched, in the background.
            sandbox = await self._start(argv, limits)
        try:
            return await sandbox.finish(stdin, limits)
        finally:
            # The next one starts once this run is over, not alongside it: on a small machine
            # the two would compete for the CPU. A call right after this one waits for it
            # (still no slower than a fresh start).
            self._prepare_warm()

    # --- long-running commands (MCP servers) -----------------------------------------------------
    def layout_with(self, **changes: Any) -> Layout:
        """This executor's layout with some fields changed (another directory, network, mounts)."""
        return dataclasses.replace(self._layout, **changes)

    async def start_detached(self, layout: Layout, command: list[str]) -> Sandbox:
        """Start `command` in a sandbox of its own with `layout`, confined like a run (rlimits,
        pids cgroup) but not supervised and without the wall-clock timeout: the caller owns its
        stdin and output pipes and must `discard` it."""
        return await start_sandbox(self._bwrap, layout.args(), layout.sandbox_root, command, self.limits,
                                   self._cgroups, identity=layout.identity, stage_plan=layout.stage_plan(),
                                   seccomp=self._seccomp,
                                   shared_nproc=self._shared_nproc)

    async def _start(self, command: list[str], limits: Limits, *, warm: bool = False) -> Sandbox:
        return await start_sandbox(self._bwrap, self._layout_args, self._layout.sandbox_root, command,
                                   limits, self._cgroups, argv_fd=warm, identity=self._layout.identity,
                                   stage_plan=self._stage_plan, seccomp=self._seccomp,
                                   shared_nproc=self._shared_nproc)

    # --- the warm sandbox ---------------------------------------------------------------------
    def _prepare_warm(self) -> None:
        """Start the next warm sandbox in the background, unless one is on its way."""
        if self._warm_enabled and self._warm is None:
            command = [self._bash, "--noprofile", "--norc", "-c", LAUNCHER, "ghost-launcher"]
            self._warm = asyncio.create_task(self._start(command, self.limits, warm=True))

    async def _take_warm(self, argv: list[str], limits: Limits) -> Sandbox | None:
        task, self._warm = self._warm, None
        if task is None:
            return None
        if limits != self.limits or sum(len(os.fsencode(a)) + 1 for a in argv) > WARM_ARGV_MAX_BYTES:
            self._warm = task  # keep it for a run it fits
            return None
        try:
            sandbox = await task  # still starting: it is ahead of a fresh start anyway
        except SandboxError as exc:
            log.warning("warm sandbox failed to start: %s", exc.message)
            return None
        if sandbox.process.returncode is not None or sandbox.directory != reset_root(self._layout.sandbox_root,
                                                                                 self._layout.identity):
            await sandbox.discard()  # died, or the sandbox directory was replaced meanwhile
            return None
        return sandbox

    async def aclose(self) -> None:
        """Stop the warm sandbox and finish removing cgroups (at shutdown)."""
        task, self._warm = self._warm, None
        if task is not None:
            task.cancel()
            # Unlike awaiting it, never raises its cancellation here; bounded, because a start
            # cancelled inside asyncio's subprocess creation may never finish.
            await asyncio.wait({task}, timeout=CLOSE_TIMEOUT_S)
            if task.done() and not task.cancelled() and task.exception() is None:
                await task.result().discard()
        await finish_cleanups()


async def _handed_over(sandbox: Sandbox, argv: list[str]) -> bool:
    """Give the warm sandbox its command; False (and it is discarded) if its launcher is gone."""
    try:
        sandbox.send_argv(argv)
    except OSError as exc:
        log.warning("warm sandbox lost before use (%s); starting a fresh one", exc)
        await sandbox.discard()
        return False
    return True
