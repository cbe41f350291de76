"""An MCP server (stdio, the official SDK) offering many tools, for the tool-budget tests.

    python mcp_many_tools_server.py COUNT

Tool `tool_NNN` answers "tool_NNN: <text>". Standard library and the SDK only: the tests copy
this file into the server's own directory, where it runs inside the sandbox.
"""

from __future__ import annotations

import sys

from mcp.server.mcpserver import MCPServer

app = MCPServer("many")
TOPICS = ["weather", "invoices", "calendar", "inventory", "shipping", "payroll", "tickets", "metrics"]


def make(index: int) -> None:
    name = f"tool_{index:03d}"
    topic = TOPICS[index % len(TOPICS)]

    def run(text: str, limit: int = 10) -> str:
        return f"{name}: {text}"

    app.add_tool(run, name=name, description=f"Look up {topic} records number {index}: returns the matching "
                 f"{topic} entries with their identifiers, dates and amounts, newest first.")


for number in range(int(sys.argv[1]) if len(sys.argv) > 1 else 200):
    make(number)

if __name__ == "__main__":
    app.run()
