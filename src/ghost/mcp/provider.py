"""Every configured MCP server's tools, as one tool source of Ghost's registry.

The registry asks `tools()` each round, so a server's tools appear when it is ready and vanish
while it is down. `apply` takes a new configuration: unchanged servers keep running, changed
ones are restarted, removed ones stopped, new ones started — all in parallel, and waited for at
most the start timeout (a slow server goes on starting in the background).

The MCP SDK is imported only when a server is configured (`_server`): it costs about a CPU-second
at start, which a Ghost with no MCP servers should not pay.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2

from ghost.mcp.config import HttpServer, McpConfig, ServerConfig, StdioServer
from ghost.mcp.launch import start_server, workdir_for
from ghost.mcp.limits import McpLimits
from ghost.sandbox.base import Executor
from ghost.tools.registry import Tool

if TYPE_CHECKING:
    from mcp.client._transport import TransportStreams

    from ghost.mcp.connection import McpServer, Opener
    from ghost.mcp.transport import Link

log = logging.getLogger("ghost.mcp")
HTTP_CONNECT_TIMEOUT_S = 10.0


class McpTools:
    """Implements `ghost.tools.registry.ToolProvider`."""

    def __init__(self, limits: McpLimits, executor: Executor, mcp_home: Path, sandbox_root: Path,
                 message_max_bytes: int, config_path: Path) -> None:
        self.limits = limits
        self.executor = executor
        self.mcp_home = mcp_home
        self.sandbox_root = sandbox_root
        self.message_max_bytes = message_max_bytes
        self.config_path = config_path
        self.config = McpConfig()
        self.servers: dict[str, McpServer] = {}

    # --- ToolProvider -----------------------------------------------------------------------
    def tools(self) -> list[Tool]:
        return [tool for server in self.servers.values() for tool in server.tools]

    async def prompt_summary(self, max_chars: int) -> str:
        return ""  # the tools' schemas say it all

    def owns(self, tool_name: str) -> bool:
        return any(tool.name == tool_name for tool in self.tools())

    # --- configuration ----------------------------------------------------------------------
    async def apply(self, config: McpConfig) -> None:
        """Bring the running servers in line with `config`. A file that cannot be used at all
        (unreadable, not JSON) leaves the running servers alone: an edit half-way is no reason
        to stop them."""
        self._report(config)
        if config.error:
            self.config = McpConfig(self.config.servers, self.config.skipped, config.error)
            return
        old, self.config = self.servers, config
        keep = {name: server for name, server in old.items() if config.servers.get(name) == server.config}
        started = [self._server(entry) for name, entry in config.servers.items() if name not in keep]
        self.servers = {**keep, **{server.name: server for server in started}}
        await asyncio.gather(*(server.stop() for name, server in old.items() if name not in keep))
        for server in started:
            server.start()
        if started:
            waits = [asyncio.ensure_future(server.wait_first_attempt()) for server in started]
            try:
                await asyncio.wait(waits, timeout=self.limits.start_timeout)
            finally:
                for wait in waits:
                    wait.cancel()

    async def restart_in_sandbox_dir(self) -> None:
        """After a workspace load replaced the agent's sandbox directory: servers that work in it
        still see the old one through their bind mount, so they start over."""
        for server in self.servers.values():
            if isinstance(server.config, StdioServer) and server.config.workdir == "sandbox":
                await server.restart()

    async def aclose(self) -> None:
        await asyncio.gather(*(server.stop() for server in self.servers.values()))
        self.servers = {}

    def info(self) -> dict[str, Any]:
        return {"config": str(self.config_path), "config_error": self.config.error,
                "skipped": dict(self.config.skipped),
                "servers": [server.info() for server in self.servers.values()]}

    def _report(self, config: McpConfig) -> None:
        if config.error:
            log.warning("mcp: %s; the servers already running are kept", config.error)
        for name, why in config.skipped.items():
            log.warning("mcp: server %r skipped: %s", name, why)
        for entry in config.servers.values():
            if isinstance(entry, StdioServer) and not entry.sandbox:
                log.warning("!!! mcp server %r runs UNSANDBOXED (\"sandbox\": false): it has Ghost's "
                            "user's rights, can read Ghost's home and the network !!!", entry.name)

    def _server(self, entry: ServerConfig) -> McpServer:
        from ghost.mcp.connection import McpServer  # the SDK, only once a server is configured

        return McpServer(entry, self._opener(entry), self.limits)

    def _opener(self, entry: ServerConfig) -> Opener:
        if isinstance(entry, HttpServer):
            return lambda link: http_transport(entry, self.message_max_bytes)

        @asynccontextmanager
        async def open_stdio(link: Link) -> AsyncIterator[TransportStreams]:
            from ghost.mcp.transport import stdio_transport

            workdir = await asyncio.to_thread(workdir_for, entry, self.mcp_home, self.sandbox_root)
            server = await start_server(entry, self.executor, workdir)
            try:
                async with stdio_transport(server, link, self.message_max_bytes) as streams:
                    yield streams
            finally:
                await asyncio.shield(server.stop())

        return open_stdio


async def _trace_header(request: httpx2.Request) -> None:
    """A call's `traceparent` (in its `_meta` with tracing on: `McpServer.call`) as the HTTP header
    too. The SDK sends requests from its connection's own task, which is outside the call's trace
    context, so the header is taken from the message itself."""
    content = request.content if request.method == "POST" else b""
    if b'"traceparent"' not in content:  # tracing off: nothing more to look at
        return
    try:
        meta = json.loads(content).get("params", {}).get("_meta", {})
    except (ValueError, AttributeError):
        return
    if isinstance(meta, dict) and isinstance(value := meta.get("traceparent"), str):
        request.headers["traceparent"] = value


@asynccontextmanager
async def http_transport(entry: HttpServer, max_message_bytes: int) -> AsyncIterator[TransportStreams]:
    # Not from the environment: an HTTP(S)_PROXY must not redirect Ghost's calls elsewhere. The
    # SDK follows a redirect only within the URL's own origin.
    from mcp.client.streamable_http import streamable_http_client

    timeout = httpx2.Timeout(HTTP_CONNECT_TIMEOUT_S, read=None)
    async with httpx2.AsyncClient(headers=entry.headers, timeout=timeout, trust_env=False,
                                  event_hooks={"request": [_trace_header]}) as http:
        async with streamable_http_client(entry.url, http_client=http, max_sse_event_size=max_message_bytes) as streams:
            yield streams
