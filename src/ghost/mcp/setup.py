"""Wiring at start: the MCP servers as a tool source, the config watcher, and Ghost's /mcp endpoint."""

from __future__ import annotations

from contextlib import AsyncExitStack

from ghost.config import Settings
from ghost.mcp.connection import McpLimits
from ghost.mcp.endpoint import start_endpoint
from ghost.mcp.provider import McpTools
from ghost.mcp.watch import ConfigWatcher
from ghost.runtime import Runtime
from ghost.tools.registry import Registry
from ghost.tools.setup import EXECUTOR_KEY

MCP_KEY = "mcp"


def limits_from(settings: Settings) -> McpLimits:
    return McpLimits(
        start_timeout=settings.mcp_start_timeout, call_timeout=settings.mcp_call_timeout,
        max_concurrent_calls=settings.mcp_max_concurrent_calls, restart_backoff=settings.mcp_restart_backoff,
        restart_backoff_max=settings.mcp_restart_backoff_max, ping_interval=settings.mcp_ping_interval,
        max_tools=settings.mcp_max_tools, schema_max_chars=settings.mcp_tool_schema_max_chars)


async def start_mcp(runtime: Runtime, stack: AsyncExitStack, registry: Registry) -> McpTools:
    """Start the configured servers (waiting at most the start timeout) and Ghost's /mcp endpoint."""
    settings = runtime.settings
    mcp = McpTools(limits_from(settings), runtime.extras[EXECUTOR_KEY], settings.home / "mcp", runtime.sandbox_root,
                   settings.mcp_message_max_bytes, settings.mcp_config_path)
    stack.push_async_callback(mcp.aclose)
    registry.add_provider(mcp)
    watcher = ConfigWatcher(settings.mcp_config_path, settings.mcp_reload_interval, mcp.apply)
    await watcher.load_now()
    watcher.start()
    stack.push_async_callback(watcher.aclose)
    runtime.after_workspace_load.append(mcp.restart_in_sandbox_dir)
    runtime.extras[MCP_KEY] = mcp
    await start_endpoint(runtime, stack, registry, mcp)
    return mcp
