"""Wiring at start: the MCP servers as a tool source, the config watcher, and Ghost's /mcp endpoint.

Nothing here imports the MCP SDK (about a CPU-second of imports): the configured servers import it
when there are some (`ghost.mcp.provider`), the /mcp endpoint at its first request (`LazyEndpoint`).
"""

from __future__ import annotations

import asyncio
import importlib
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.types import Receive, Scope, Send

from ghost.config import Settings
from ghost.mcp.limits import McpLimits
from ghost.mcp.provider import McpTools
from ghost.mcp.watch import ConfigWatcher
from ghost.sandbox.base import Executor
from ghost.tools.registry import Registry
from ghost.workspace.gate import WorkspaceGate

if TYPE_CHECKING:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager


class LazyEndpoint:
    """Ghost's /mcp endpoint, started at its first request and stopped with Ghost.

    The SDK's session manager runs a task group that must be entered and left by one task, so it
    runs in a task of its own (not the request's, which ends with the request)."""

    def __init__(self, settings: Settings, gate: WorkspaceGate, registry: Registry, tools: McpTools) -> None:
        self._parts = (settings, gate, registry, tools)
        self._manager: StreamableHTTPSessionManager | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._closed = False

    @property
    def started(self) -> bool:
        return self._manager is not None

    async def handle_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        manager = self._manager or await self._start()
        await manager.handle_request(scope, receive, send)

    async def _start(self) -> StreamableHTTPSessionManager:
        async with self._lock:  # two first requests at once start one manager
            if self._manager is None:
                if self._closed:
                    raise RuntimeError("the MCP endpoint has stopped")
                # The SDK's import takes about a CPU-second: in a thread, so the loop serves on.
                endpoint = await asyncio.to_thread(importlib.import_module, "ghost.mcp.endpoint")
                manager = endpoint.build_manager(*self._parts)
                running = asyncio.get_running_loop().create_future()
                self._task = asyncio.create_task(self._run(manager, running), name="mcp-endpoint")
                await running  # the manager's task group is up (or its start failed: raised here)
                self._manager = manager
            return self._manager

    async def _run(self, manager: StreamableHTTPSessionManager, running: asyncio.Future[None]) -> None:
        try:
            async with manager.run():
                running.set_result(None)
                await self._stop.wait()
        except BaseException as exc:
            if not running.done():
                running.set_exception(exc)
            raise

    async def aclose(self) -> None:
        self._closed = True
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


@dataclass(frozen=True)
class McpServices:
    tools: McpTools  # the configured servers, a source of the tool registry
    endpoint: LazyEndpoint  # Ghost's own /mcp endpoint (routed by ghost.api.mcp)


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
    endpoint = LazyEndpoint(settings, gate, registry, mcp)
    stack.push_async_callback(endpoint.aclose)
    return McpServices(mcp, endpoint)
