"""The sandbox interface: run a command on the sandbox directory, within limits, get an ExecResult.

Two backends implement `Executor`:

- `ghost.sandbox.bwrap.BwrapExecutor` isolates (namespaces, read-only system, no network);
- `ghost.sandbox.process.ProcessExecutor` does not, and says so (`isolated = False`); it runs
  only when chosen explicitly (`--sandbox-backend process`);
- `ghost.sandbox.unavailable.UnavailableExecutor` runs nothing and refuses with the reason: what
  `auto` gives when bubblewrap cannot run.

Both apply the same `Limits` and return the same `ExecResult`. Each class docstring states
exactly what it isolates and what it does not.
"""

from __future__ import annotations

import asyncio
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ghost.config import Settings

if TYPE_CHECKING:
    from ghost.sandbox.cgroup import PidsCgroups

# Why a run was stopped by Ghost or the kernel rather than finishing on its own.
LimitName = Literal["timeout", "output", "cpu", "file_size"]


@dataclass(frozen=True)
class Limits:
    """What one run may use. Every field comes from a setting (see `from_settings`)."""

    timeout_s: float  # wall clock for the whole run; then the whole process tree is killed
    cpu_s: int  # CPU seconds per process (RLIMIT_CPU)
    memory_bytes: int  # address space per process (RLIMIT_AS)
    file_size_bytes: int  # largest file a process may write (RLIMIT_FSIZE)
    max_processes: int  # processes + threads of one run at once
    max_open_files: int  # RLIMIT_NOFILE
    output_bytes: int  # kept per stream; the middle of longer output is cut out
    output_kill_bytes: int  # both streams together; past it the run is killed as a flood
    run_memory_bytes: int = 1 << 30  # all processes of one run together (memory cgroup, if any)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Limits":
        return cls(
            timeout_s=settings.sandbox_timeout, cpu_s=settings.sandbox_cpu_seconds,
            memory_bytes=settings.sandbox_memory_bytes, file_size_bytes=settings.sandbox_file_size_bytes,
            max_processes=settings.sandbox_max_processes, max_open_files=settings.sandbox_max_open_files,
            output_bytes=settings.sandbox_output_bytes, output_kill_bytes=settings.sandbox_output_kill_bytes,
            run_memory_bytes=settings.sandbox_run_memory_bytes,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ExecResult:
    exit_code: int | None  # None when Ghost killed the run (timeout, output flood)
    stdout: str  # decoded as UTF-8 (invalid bytes replaced), cut to the limit with a marker
    stderr: str
    duration_s: float
    limit: LimitName | None = None  # set when a limit stopped the run
    signal: int | None = None  # the signal that ended the command, when one did

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.limit is None

    @property
    def outcome(self) -> str:
        """ok, error (a non-zero exit), timeout, or killed (another limit stopped it)."""
        if self.limit == "timeout":
            return "timeout"
        if self.limit is not None:
            return "killed"
        return "ok" if self.exit_code == 0 else "error"


class Executor(ABC):
    """Runs a command with the sandbox directory as its working directory.

    Subclasses say in their docstring what they isolate. Common to all: the environment is
    scrubbed (no Ghost setting, key or home path reaches the command), every `Limits` field is
    enforced, output is read incrementally and capped, and a cancelled `run` kills the process
    tree before it returns.
    """

    name: str = "abstract"
    isolated: bool = False
    available: bool = True  # False: every run is refused (see ghost.sandbox.unavailable)

    def __init__(self, limits: Limits, max_concurrent: int, *, python: str, bash: str,
                 cgroups: "PidsCgroups | None") -> None:
        self.limits = limits
        self._slots = asyncio.Semaphore(max_concurrent)
        self._python = python
        self._bash = bash
        self._cgroups = cgroups

    # Told each run's `ExecResult.outcome` ("error" when the run raised): the metrics' hook.
    on_outcome: Callable[[str], None] | None = None

    async def run(self, argv: Sequence[str], *, stdin: bytes = b"", limits: Limits | None = None) -> ExecResult:
        """Run `argv` (argv[0] as seen inside the sandbox) and wait for it, within `limits`."""
        async with self._slots:  # a flood of runs queues here instead of forking the host to death
            if self.on_outcome is None:
                return await self._run(list(argv), stdin, limits or self.limits)
            try:
                result = await self._run(list(argv), stdin, limits or self.limits)
            except Exception:
                self.on_outcome("error")
                raise
            self.on_outcome(result.outcome)
            return result

    @abstractmethod
    async def _run(self, argv: list[str], stdin: bytes, limits: Limits) -> ExecResult: ...

    @property
    def python(self) -> str:
        """The Python interpreter's path as the command sees it."""
        return self._python

    @property
    def bash(self) -> str:
        """The shell's path as the command sees it."""
        return self._bash

    @property
    def process_limit(self) -> str:
        """How the per-run process limit holds: a pids cgroup, RLIMIT_NPROC, or not at all (root)."""
        if self._cgroups is not None:
            return "cgroup"
        return "rlimit" if os.getuid() != 0 else "none"

    @property
    def run_memory_limit(self) -> str:
        """How one run's memory is bounded: a memory cgroup for the whole run, or per process only."""
        return "cgroup" if self._cgroups is not None and self._cgroups.limits_memory else "per-process"

    @abstractmethod
    def with_root(self, sandbox_root: Path) -> "Executor":
        """The same backend and limits over another sandbox folder (another user's workspace): a
        new executor with its own slots and warm sandbox, which sees that folder only."""

    async def aclose(self) -> None:
        """Release what the backend keeps between runs (called at shutdown)."""

    def info(self) -> dict[str, Any]:
        """What /api/health shows about the sandbox."""
        return {"backend": self.name, "isolated": self.isolated, "available": self.available,
                "process_limit": self.process_limit,
                "run_memory_limit": self.run_memory_limit, "python": self._python,
                "limits": self.limits.as_dict()}
