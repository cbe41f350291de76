"""No sandboxed execution: what `--sandbox-backend auto` gives when bubblewrap cannot run.

Isolation is never lost silently: rather than running the model's code unisolated, every run
(`execute`, skills; MCP stdio servers check `available`) is refused with the reason bubblewrap
gave and what to do. Everything else Ghost does keeps working. The unisolated process backend
is used only when chosen explicitly (`--sandbox-backend process`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ghost.errors import SandboxError
from ghost.sandbox.base import ExecResult, Executor, Limits


class UnavailableExecutor(Executor):
    """Runs nothing; every run raises SandboxError with the reason."""

    name = "none"
    isolated = False
    available = False

    def __init__(self, reason: str, limits: Limits, *, python: str, bash: str) -> None:
        super().__init__(limits, 1, python=python, bash=bash, cgroups=None)
        self.reason = reason

    @property
    def refusal(self) -> str:
        return (f"sandboxed execution is unavailable on this server: {self.reason}. Code cannot be run "
                "until an administrator fixes bubblewrap (see docs/sandbox.md); file tools still work.")

    def with_root(self, sandbox_root: Path) -> "UnavailableExecutor":
        # Another user's folder changes nothing: their code is refused for the same reason.
        return UnavailableExecutor(self.reason, self.limits, python=self._python, bash=self._bash)

    async def _run(self, argv: list[str], stdin: bytes, limits: Limits) -> ExecResult:
        raise SandboxError(self.refusal)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "available": False, "reason": self.reason, "process_limit": "none"}
