"""One configured MCP server, kept running: start, initialise, list tools, serve calls, restart.

A supervising task owns the SDK `Client` (its task groups must be entered and left by one task).
While the server is up its tools are offered; when it dies (its output ends, an HTTP server stops
answering, it breaks the protocol) they are withdrawn at once, the process is stopped, and
a new start follows after a back-off that doubles on each quick failure.
"""

from __future__ import annotations

import asyncio
import json
import re
import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, Literal

import anyio
import mcp_types
from mcp import Client
from mcp.client._transport import TransportStreams
from mcp.shared.exceptions import MCPError

from ghost import __version__
from ghost.mcp.config import HttpServer, ServerConfig
from ghost.mcp.limits import McpLimits
from ghost.mcp.names import namespaced
from ghost.mcp.results import tool_result
from ghost.mcp.transport import Link
from ghost.observe.tracing import outgoing_headers
from ghost.tools.base import ToolResult
from ghost.tools.registry import TOOL_NAME, Tool

log = logging.getLogger("ghost.mcp")
State = Literal["starting", "ready", "down", "stopped"]
Opener = Callable[[Link], AbstractAsyncContextManager[TransportStreams]]
STABLE_AFTER_S = 60.0  # a server that ran this long before dying starts the back-off over
DESCRIPTION_MAX_CHARS = 1024
MAX_LIST_PAGES = 100


class McpServer:
    def __init__(self, config: ServerConfig, opener: Opener, limits: McpLimits) -> None:
        self.config = config
        self.name = config.name
        self.limits = limits
        self.state: State = "starting"
        self.error = ""
        self.restarts = 0
        self._tools: list[Tool] = []
        self.skipped_tools: dict[str, str] = {}
        self._opener = opener
        self._client: Client | None = None
        self._link = Link()
        self._slots = asyncio.Semaphore(limits.max_concurrent_calls)
        self._first_attempt = asyncio.Event()
        self._relist = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def tools(self) -> list[Tool]:
        """Its tools while it is up; none from the moment its connection is lost."""
        return self._tools if self.state == "ready" and not self._link.lost.is_set() else []

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name=f"mcp server {self.name}")

    async def wait_first_attempt(self) -> None:
        await self._first_attempt.wait()

    async def stop(self) -> None:
        self._went_down("stopped", state="stopped")
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})

    async def restart(self) -> None:
        """End the current connection; the supervisor starts a new one at once."""
        self._link.end("restarted by Ghost")

    # --- calls ------------------------------------------------------------------------------
    async def call(self, tool: str, ghost_name: str, arguments: dict[str, Any]) -> ToolResult:
        client = self._client
        if client is None or self.state != "ready":
            return ToolResult(f"{ghost_name}: the MCP server {self.name!r} is not running right now "
                              f"({self.error or self.state}); Ghost restarts it, try again later.",
                              ok=False, summary=f"{ghost_name}: server down")
        try:
            async with asyncio.timeout(self.limits.call_timeout):
                async with self._slots:
                    # With tracing on, the call's trace context goes in `_meta` (MCP's place for it).
                    result = await client.call_tool(tool, arguments, meta=outgoing_headers() or None)
        except TimeoutError:
            return ToolResult(f"{ghost_name}: the MCP server {self.name!r} did not answer within "
                              f"{self.limits.call_timeout:g} s (--mcp-call-timeout); the call was cancelled.",
                              ok=False, summary=f"{ghost_name}: timed out")
        except MCPError as exc:
            if exc.code == mcp_types.CONNECTION_CLOSED or self._link.lost.is_set():
                return self._went_away(ghost_name)
            return ToolResult(f"{ghost_name} failed: {exc.error.message[:2000]}", ok=False,
                              summary=f"{ghost_name} failed")
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream):
            return self._went_away(ghost_name)
        except Exception as exc:  # noqa: BLE001 - a reply that breaks the SDK's checks is the server's fault
            log.warning("mcp server %s: unusable reply to %s: %s: %s", self.name, tool, type(exc).__name__,
                        str(exc)[:500])
            return ToolResult(f"{ghost_name}: the MCP server {self.name!r} sent a reply Ghost cannot use.",
                              ok=False, summary=f"{ghost_name}: bad reply")
        return tool_result(ghost_name, result)

    def _went_away(self, ghost_name: str) -> ToolResult:
        why = f" ({self._link.reason})" if self._link.reason else ""
        return ToolResult(f"{ghost_name}: the MCP server {self.name!r} went away during the call{why}; "
                          f"Ghost restarts it.", ok=False, summary=f"{ghost_name}: server went away")

    # --- supervision ------------------------------------------------------------------------
    async def _supervise(self) -> None:
        delay = self.limits.restart_backoff
        while True:
            started = time.monotonic()
            try:
                await self._serve_once()
                why = self._link.reason or "the connection ended"
            except Exception as exc:  # noqa: BLE001 - whatever the server did, it is restarted
                why = _describe(exc, self.limits.start_timeout)
            tail = " | ".join(list(self._link.stderr_tail)[-3:])
            self._went_down(why + (f" (its stderr ends: {tail[-600:]})" if tail else ""))
            log.warning("mcp server %s is down: %s; restarting in %.1f s", self.name, self.error, delay)
            if time.monotonic() - started > STABLE_AFTER_S:
                delay = self.limits.restart_backoff
            self._first_attempt.set()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.limits.restart_backoff_max)
            self.restarts += 1
            self.state = "starting"

    async def _serve_once(self) -> None:
        self._link = link = Link()
        async with AsyncExitStack() as stack:
            async with asyncio.timeout(self.limits.start_timeout):
                client = await stack.enter_async_context(Client(
                    self._opener(link), client_info=mcp_types.Implementation(name="ghost", version=__version__),
                    message_handler=self._on_message, cache=None))
                await self._list_tools(client)
            self._client, self.state, self.error = client, "ready", ""
            self._first_attempt.set()
            log.info("mcp server %s ready: %d tools", self.name, len(self.tools))
            await self._watch(client, link)

    async def _watch(self, client: Client, link: Link) -> None:
        """Return when the connection is lost; meanwhile re-list tools when told they changed,
        and probe an HTTP server (a stdio server's death shows as the end of its output)."""
        interval = self.limits.ping_interval if isinstance(self.config, HttpServer) else None
        while not link.lost.is_set():
            done = await _first_of(link.lost, self._relist, timeout=interval)
            if self._relist.is_set():
                self._relist.clear()
                try:
                    async with asyncio.timeout(self.limits.call_timeout):
                        await self._list_tools(client)
                except TimeoutError:
                    link.end("did not list its changed tools within the call timeout")
            elif not done:
                await self._probe(client, link)

    async def _probe(self, client: Client, link: Link) -> None:
        """Is an HTTP server still there? Asked by listing its tools, which also picks up a
        changed list (`ping` is gone from the 2026-07-28 protocol)."""
        try:
            async with asyncio.timeout(self.limits.call_timeout):
                await self._list_tools(client)
        except Exception as exc:  # noqa: BLE001 - any failure means the connection is not usable
            link.end(f"stopped answering ({type(exc).__name__}: {str(exc)[:200]})")

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, mcp_types.ToolListChangedNotification):
            self._relist.set()

    def _went_down(self, why: str, state: State = "down") -> None:
        self._client, self._tools, self.state = None, [], state
        self.error = why

    # --- tools ------------------------------------------------------------------------------
    async def _list_tools(self, client: Client) -> None:
        listed: list[mcp_types.Tool] = []
        cursor: str | None = None
        for _ in range(MAX_LIST_PAGES):  # a server handing out cursors for ever is not followed for ever
            page = await client.list_tools(cursor=cursor)
            listed += page.tools
            cursor = page.next_cursor
            if not cursor or len(listed) >= self.limits.max_tools:
                break
        self.skipped_tools = {tool.name[:64]: "more tools than --mcp-max-tools" for tool in listed[self.limits.max_tools:]}
        listed = listed[:self.limits.max_tools]
        names = namespaced(self.name, [tool.name for tool in listed])
        tools = []
        for tool in listed:
            made = self._tool(names[tool.name], tool)
            if isinstance(made, str):
                self.skipped_tools[tool.name[:64]] = made
            else:
                tools.append(made)
        self._tools = tools

    def _tool(self, ghost_name: str, tool: mcp_types.Tool) -> Tool | str:
        schema = dict(tool.input_schema)
        if schema.get("type", "object") != "object":
            return "its input schema is not an object schema"
        schema["type"] = "object"
        if len(json.dumps(schema)) > self.limits.schema_max_chars:
            return f"its input schema is larger than {self.limits.schema_max_chars} characters (--mcp-tool-schema-max-chars)"
        if not TOOL_NAME.match(ghost_name):
            return "no valid tool name could be made from its name"
        description = (tool.description or tool.title or tool.name).strip()[:DESCRIPTION_MAX_CHARS]
        original = tool.name

        async def handler(**arguments: Any) -> ToolResult:
            return await self.call(original, ghost_name, arguments)

        return Tool(ghost_name, f"{description} (from MCP server {self.name})", schema, handler,
                    check_arguments=False, source=f"mcp:{self.name}")

    def info(self) -> dict[str, Any]:
        stdio = not isinstance(self.config, HttpServer)
        info: dict[str, Any] = {
            "name": self.name, "transport": "stdio" if stdio else "http", "state": self.state,
            "tools": len(self.tools), "tool_names": [tool.name for tool in self.tools],
            "restarts": self.restarts, "error": self.error,
        }
        if stdio:
            info.update(sandboxed=self.config.sandbox, network=self.config.network or not self.config.sandbox,
                        workdir=self.config.workdir)
        else:
            info["url"] = re.sub(r"//[^/@]*@", "//", self.config.url)  # never a password in userinfo
        if self.skipped_tools:
            info["skipped_tools"] = self.skipped_tools
        return info


async def _first_of(*events: asyncio.Event, timeout: float | None) -> bool:
    """Wait until one of `events` is set (True) or `timeout` passes (False)."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    return bool(done)


def _describe(exc: BaseException, start_timeout: float) -> str:
    """One line for health and the log, from whatever a start or a connection raised."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return f"did not start and list its tools within {start_timeout:g} s (--mcp-start-timeout)"
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    if isinstance(exc, MCPError):
        message = exc.error.message
    return f"{type(exc).__name__}: {message}"[:1000]

