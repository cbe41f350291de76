"""The execute tool: run Python or bash in the sandbox and report what happened."""

from __future__ import annotations

from typing import Any, Literal

from ghost.errors import ToolError
from ghost.sandbox.base import ExecResult, Executor
from ghost.tools.base import ToolResult

LIMIT_TEXT = {
    "timeout": "it ran past the time limit of {timeout:g} s and was killed",
    "output": "it wrote more output than allowed and was killed",
    "cpu": "it used up its CPU time limit",
    "file_size": "it tried to write a file larger than allowed",
}


class ExecuteTool:
    def __init__(self, executor: Executor, code_max_chars: int) -> None:
        self.executor = executor
        self.code_max_chars = code_max_chars

    def functions(self) -> list[Any]:
        return [self.execute]

    async def execute(self, code: str, language: Literal["python", "bash"] = "python") -> ToolResult:
        """Run Python or bash code in the sandbox folder (the working directory, where the file
        tools work too) and get its exit code, output and duration. Time, memory, processes and
        output are limited. Print what you want to see.

        Args:
            code: The program: a Python script or a bash script.
            language: "python" or "bash".
        """
        if len(code) > self.code_max_chars:
            raise ToolError(f"code is {len(code):,} characters; at most {self.code_max_chars:,} are run "
                            "directly: write it to a file and run that file instead")
        if "\0" in code:
            raise ToolError("code must not contain NUL characters")
        interpreter = self.executor.python if language == "python" else self.executor.bash
        result = await self.executor.run([interpreter, "-c", code])
        return ToolResult(format_result(result, self.executor.limits.timeout_s), ok=result.ok,
                          summary=summary(language, result))


def summary(what: str, result: ExecResult) -> str:
    if result.limit:
        return f"{what}: stopped ({result.limit}) after {result.duration_s:.2f} s"
    return f"{what}: exit {result.exit_code} in {result.duration_s:.2f} s"


def format_result(result: ExecResult, timeout_s: float) -> str:
    if result.limit:
        head = f"stopped: {LIMIT_TEXT[result.limit].format(timeout=timeout_s)} ({result.duration_s:.2f} s)"
    else:
        head = f"exit code {result.exit_code} ({result.duration_s:.2f} s)"
    parts = [head]
    parts.append("stdout:\n" + result.stdout if result.stdout else "stdout: (empty)")
    if result.stderr:
        parts.append("stderr:\n" + result.stderr)
    return "\n".join(parts)
