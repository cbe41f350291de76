"""Ghost's system prompt: what it is, its tools, the sandbox, and a short view of its memory."""

from __future__ import annotations

from typing import Any

PROMPT_MEMORY_CHARS = 2000

_INTRO = """You are Ghost, an AI agent with a private workspace.
You can call tools to work in a sandboxed directory: list, read, write, append, delete, move and search files; execute Python or bash there ({network}, limited time and memory); keep notes in a persistent key-value scratchpad; and create reusable skills (small Python programs) that become tools you can call later.
Use tools when they help you answer correctly; otherwise answer directly. Paths are relative to the sandbox. When you are done, answer the user plainly; do not describe tool calls you did not make."""


def system_message(memory_summary: str, tool_names: list[str], *, network: bool = False) -> dict[str, Any]:
    parts = [_INTRO.format(network="with network access" if network else "no network")]
    if tool_names:
        parts.append("Your tools: " + ", ".join(tool_names) + ".")
    if memory_summary.strip():
        parts.append("Your scratchpad and skills right now:\n" + memory_summary.strip())
    return {"role": "system", "content": "\n\n".join(parts)}


def with_system_prompt(system: dict[str, Any], messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ghost's prompt goes first; the client's own system messages follow it unchanged."""
    return [system, *messages]
