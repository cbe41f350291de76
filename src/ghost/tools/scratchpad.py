"""Scratchpad tools: the model's persistent notes, as JSON values under string keys."""

from __future__ import annotations

import json
from typing import Any

from ghost.store.scratchpad import Scratchpad
from ghost.tools.base import ToolResult

PREVIEW_CHARS = 80


class ScratchpadTools:
    def __init__(self, scratchpad: Scratchpad) -> None:
        self.pad = scratchpad

    def functions(self) -> list[Any]:
        return [self.scratchpad_set, self.scratchpad_get, self.scratchpad_list, self.scratchpad_delete]

    async def scratchpad_set(self, key: str, value: Any) -> ToolResult:
        """Save a value in the scratchpad, your persistent memory across conversations. Replaces
        what the key held before.

        Args:
            key: Name to save the value under.
            value: Any JSON value: text, number, list or object.
        """
        await self.pad.set(key, value)
        return ToolResult(f"saved {key!r}", summary=f"scratchpad: saved {key}")

    async def scratchpad_get(self, key: str) -> ToolResult:
        """Read a value from the scratchpad.

        Args:
            key: Name the value was saved under.
        """
        value = await self.pad.get(key)
        return ToolResult(json.dumps(value, ensure_ascii=False, indent=1), summary=f"scratchpad: read {key}")

    async def scratchpad_list(self) -> ToolResult:
        """List the scratchpad's keys with the size of each value."""
        entries = await self.pad.list()
        if not entries:
            return ToolResult("the scratchpad is empty", summary="scratchpad: empty")
        lines = [f"{entry.key} ({entry.size} bytes)" for entry in entries]
        return ToolResult("\n".join(lines), summary=f"scratchpad: {len(entries)} keys")

    async def scratchpad_delete(self, key: str) -> ToolResult:
        """Delete a value from the scratchpad.

        Args:
            key: Name of the value to delete.
        """
        if not await self.pad.delete(key):
            return ToolResult(f"no scratchpad entry {key!r}", ok=False, summary=f"scratchpad: no {key}")
        return ToolResult(f"deleted {key!r}", summary=f"scratchpad: deleted {key}")

    async def prompt_summary(self, max_chars: int) -> str:
        """The scratchpad as the system prompt shows it: keys and the start of each value."""
        total, previews = await self.pad.previews(PREVIEW_CHARS, max(1, max_chars // 20))
        if not total:
            return ""
        lines = ["Scratchpad (newest first; scratchpad_get reads a whole value):"]
        for key, start in previews:
            line = f"- {key}: {start}{'…' if len(start) >= PREVIEW_CHARS else ''}"
            if sum(len(x) + 1 for x in lines) + len(line) > max_chars - 40:
                break
            lines.append(line)
        if total > len(lines) - 1:
            lines.append(f"- … {total - len(lines) + 1} more (scratchpad_list)")
        return "\n".join(lines)[:max_chars]
