"""The limits every MCP server connection keeps (from Settings), apart from the connection itself
so that wiring them up does not import the MCP SDK."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class McpLimits:
    start_timeout: float
    call_timeout: float
    max_concurrent_calls: int
    restart_backoff: float
    restart_backoff_max: float
    ping_interval: float
    max_tools: int
    schema_max_chars: int
