"""MCP: tools from Model Context Protocol servers (sandboxed by default), and Ghost's own tools
offered to MCP clients at /mcp. See docs/mcp.md."""
