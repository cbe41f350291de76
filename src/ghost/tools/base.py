"""What the agent turn needs from tools: a registry of schemas and a dispatcher.

The agent only depends on this module. A tool call that fails because of the model (bad
arguments, a tool that raised, a limit hit) comes back as a `ToolResult` with `ok=False` and a
message the model can act on; only Ghost's own bugs propagate as exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class ToolResult:
    content: str  # what goes back to the model as the tool message (bounded in size)
    ok: bool = True
    summary: str = ""  # one short line for the activity feed ("wrote notes.txt (12 bytes)")


@dataclass(frozen=True)
class ToolContext:
    request_id: str
    session_id: str
    call_id: str = ""  # the model's id of this call (traces show it)


class ToolRegistry(Protocol):
    def schemas(self) -> list[dict[str, Any]]:
        """OpenAI `tools` entries ({"type": "function", "function": {...}}) for every tool now."""
        ...

    def has(self, name: str) -> bool: ...

    async def call(self, name: str, arguments: str, context: ToolContext) -> ToolResult:
        """Run one call. `arguments` is the model's raw JSON string. Cancelling the awaiting
        task must stop the tool (kill a running sandbox process)."""
        ...

    async def prompt_summary(self, max_chars: int) -> str:
        """A short view of the scratchpad and acquired skills for the system prompt."""
        ...
