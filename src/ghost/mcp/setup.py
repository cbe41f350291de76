"""Wiring at start: the MCP servers as a tool source, the config watcher, and Ghost's /mcp endpoint."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from ghost.config import Settings
from ghost.mcp.connection import McpLimits
from ghost.mcp.endpoint import start_endpoint
from ghost.mcp.provider import McpTools
from ghost.mcp.watch import ConfigWatcher
from ghost.sandbox.base import Executor
from ghost.tools.registry import Registry
from ghost.workspace.gate import WorkspaceGate


@dataclass(frozen=True)
class McpServices:
    tools: McpTools  # the configured servers, a source of the tool registry
    endpoint: StreamableHTTPSessionManager  # Ghost's own /mcp endpoint (routed by ghost.api.mcp)


def limits_from(settings: Settings) -> McpLimits:
    return McpLimits(
        start_timeout=settings.mcp_start_timeout, call_timeout=settings.mcp_call_timeout,
        max_concurrent_calls=settings.mcp_max_concurrent_calls, restart_backoff=settings.mcp_restart_backoff,
        restart_backoff_max=settings.mcp_restart_backoff_max, ping_interval=settings.mcp_ping_interval,
        max_tools=settings.mcp_max_tools, schema_max_chars=settings.mcp_tool_schema_max_chars)


async def start_mcp(settings: Settings, executor: Executor, sandbox_root: Path, gate: WorkspaceGate,
                    registry: Registry, stack: AsyncExitStack, mcp_home: Path | None = None) -> McpServices:
    """Start the configured servers (waiting at most the start timeout) and Ghost's /mcp endpoint.
    A workspace load should call `tools.restart_in_sandbox_dir` (the sandbox folder was swapped).
    `mcp_home`: where servers with their own directory keep it (default <home>/mcp); each user's
    workspace runs its own servers, in its own sandboxes, over its own directories."""
    mcp = McpTools(limits_from(settings), executor, mcp_home or settings.home / "mcp", sandbox_root,
                   settings.mcp_message_max_bytes, settings.mcp_config_path)
    stack.push_async_callback(mcp.aclose)
    registry.add_provider(mcp)
    watcher = ConfigWatcher(settings.mcp_config_path, settings.mcp_reload_interval, mcp.apply)
    await watcher.load_now()
    watcher.start(hup=mcp_home is None)  # other users' watchers poll the file; SIGHUP is the admin's
    stack.push_async_callback(watcher.aclose)
    endpoint = await start_endpoint(settings, gate, registry, mcp, stack)
    return McpServices(mcp, endpoint)
