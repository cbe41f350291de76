"""The names an MCP server's tools get in Ghost: `server__tool`, always a valid, unique tool name.

Ghost's tool names follow `^[A-Za-z_][A-Za-z0-9_]{0,63}$` (what OpenAI-compatible servers
accept). An MCP tool may be called anything; its name is folded into that alphabet, cut to
fit, and made unique with a short hash when folding or cutting made two names meet. The
server prefix keeps them apart from Ghost's own tools and from other servers' tools.
"""

from __future__ import annotations

import hashlib
import re

from ghost.mcp.config import tool_prefix

MAX_NAME = 64
SEPARATOR = "__"


def namespaced(server: str, tools: list[str]) -> dict[str, str]:
    """Ghost's name for each of `server`'s tools (by the tool's own name)."""
    prefix = tool_prefix(server) + SEPARATOR
    room = MAX_NAME - len(prefix)
    names: dict[str, str] = {}
    taken: set[str] = set()
    # Names already valid keep themselves; folded ones yield to them on a clash.
    for tool in sorted(tools, key=lambda name: re.fullmatch(r"[A-Za-z0-9_]+", name) is None):
        folded = re.sub(r"[^A-Za-z0-9_]", "_", tool)[:room] or "_"
        folded = _unique(folded, tool, room, taken)
        taken.add(folded)
        names[tool] = prefix + folded
    return {tool: names[tool] for tool in tools}


def _unique(folded: str, original: str, room: int, taken: set[str]) -> str:
    if folded not in taken:
        return folded
    digest = hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()
    for length in (6, 12, 24):
        candidate = f"{folded[:room - length - 1]}_{digest[:length]}"
        if candidate not in taken:
            return candidate
    raise ValueError(f"cannot name tool {original!r} uniquely")  # needs a SHA-256 collision
