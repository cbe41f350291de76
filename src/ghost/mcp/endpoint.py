"""Ghost as an MCP server at /mcp (Streamable HTTP): its own tools for other MCP clients.

Offered: Ghost's built-in tools (files, execute, scratchpad, skill management) and its acquired
skills, built from the same registry the agent uses, run through the same dispatcher (argument
checks, limits, result cap). Not offered: tools Ghost itself takes from MCP servers — Ghost is
not a relay to them.

The route (`ghost.api.mcp`) sits in Ghost's app like any other, behind the same middleware
(request id, body limit, CORS and Host rules), and the same key: `X-Ghost-Key` or
`Authorization: Bearer`. The SDK's own DNS-rebinding check is off because Ghost's middleware owns
those rules app-wide. The SDK's session manager runs stateless (each POST is a complete exchange),
so nothing is kept per client between requests; it is built at the endpoint's first request
(`ghost.mcp.setup.LazyEndpoint`, which runs it until Ghost stops).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import mcp_types
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings

from ghost import __version__
from ghost.config import Settings
from ghost.mcp.provider import McpTools
from ghost.tools.base import ToolContext
from ghost.tools.registry import Registry
from ghost.workspace.gate import WorkspaceGate

SESSION_ID = "mcp"  # the ToolContext session of calls made through /mcp


def build_server(gate: WorkspaceGate, registry: Registry, mcp: McpTools) -> Server[Any]:
    def offered(name: str) -> bool:
        return registry.has(name) and not mcp.owns(name)

    async def list_tools(ctx: Any, params: Any) -> mcp_types.ListToolsResult:
        tools = [mcp_types.Tool(name=f["name"], description=f["description"], input_schema=f["parameters"])
                 for f in (schema["function"] for schema in registry.schemas()) if offered(f["name"])]
        return mcp_types.ListToolsResult(tools=tools)

    async def call_tool(ctx: Any, params: mcp_types.CallToolRequestParams) -> mcp_types.CallToolResult:
        if not offered(params.name):
            return _text_result(f"There is no tool named {params.name!r}.", error=True)
        context = ToolContext(request_id=f"mcp-{uuid.uuid4().hex[:12]}", session_id=SESSION_ID)
        async with gate.turn():  # a workspace load does not swap files under a running tool
            result = await registry.call(params.name, json.dumps(params.arguments or {}), context)
        return _text_result(result.content, error=not result.ok)

    return Server("ghost", version=__version__, instructions="Ghost's sandbox: files, Python and shell "
                  "execution, a key-value scratchpad and reusable skills.",
                  on_list_tools=list_tools, on_call_tool=call_tool)


def _text_result(text: str, *, error: bool) -> mcp_types.CallToolResult:
    return mcp_types.CallToolResult(content=[mcp_types.TextContent(text=text)], is_error=error)


def build_manager(settings: Settings, gate: WorkspaceGate, registry: Registry,
                  mcp: McpTools) -> StreamableHTTPSessionManager:
    """The SDK's session manager behind /mcp (not yet running: its `run()` starts it)."""
    return StreamableHTTPSessionManager(
        app=build_server(gate, registry, mcp), stateless=True, json_response=True,
        security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        max_request_body_size=settings.max_request_bytes)
