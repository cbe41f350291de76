"""`ghost mcp list`: the MCP section of a running Ghost's /api/health, for people."""

from __future__ import annotations

from typing import Any

from rich.console import Console


def print_mcp_servers(mcp: dict[str, Any] | None, out: Console, err: Console) -> int:
    if mcp is None:
        err.print("this Ghost reports no MCP servers (it is older, or still starting)")
        return 1
    if mcp.get("config_error"):
        err.print(f"config {mcp['config']}: {mcp['config_error']}")
    servers = mcp.get("servers", [])
    if not servers:
        out.print(f"no MCP servers (config: {mcp.get('config')})")
    for server in servers:
        out.print(_headline(server))
        for name in server.get("tool_names", []):
            out.print(f"    {name}")
        if server.get("error") and server.get("state") != "ready":
            out.print(f"    error: {server['error']}")
    for name, why in mcp.get("skipped", {}).items():
        out.print(f"{name}: skipped: {why}")
    return 0


def _headline(server: dict[str, Any]) -> str:
    if server.get("transport") == "http":
        where = f"http {server.get('url', '')}"
    else:
        where = "stdio, " + ("sandboxed" if server.get("sandboxed") else "NOT sandboxed")
        where += ", network" if server.get("network") else ", no network"
    restarts = f", {server['restarts']} restarts" if server.get("restarts") else ""
    return f"{server['name']}: {server['state']} ({where}), {server['tools']} tools{restarts}"
