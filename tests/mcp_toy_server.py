"""A small MCP server written with the official SDK, for Ghost's MCP tests and bench.

    python mcp_toy_server.py                 # stdio
    python mcp_toy_server.py --http PORT     # Streamable HTTP on 127.0.0.1:PORT/mcp

Standard library and the SDK only: the tests copy this file into a server's own directory,
where it runs inside the sandbox.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

app = MCPServer("toy")
MARKS = Path(os.environ.get("TOY_MARKS", "."))


@app.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@app.tool()
def trace_context(ctx: Context) -> str:
    """The W3C traceparent this call carried in its _meta, and (over HTTP) in its headers."""
    meta = ctx.request_context.meta or {}
    request = getattr(ctx.request_context, "request", None)
    header = request.headers.get("traceparent", "") if request is not None else None
    return json.dumps({"meta": meta.get("traceparent", ""), "header": header})


@app.tool()
def huge(chars: int) -> str:
    """Return a text of this many characters."""
    return "x" * chars


@app.tool()
async def hang(tag: str) -> str:
    """Never answer; record the start in started-<tag>, a cancellation in cancelled-<tag>."""
    (MARKS / f"started-{tag}").write_text("started")
    try:
        await asyncio.sleep(3600)
    except BaseException:
        (MARKS / f"cancelled-{tag}").write_text("cancelled")
        raise
    return "woke up"


@app.tool()
def crash() -> str:
    """Exit the server process at once."""
    os._exit(3)


@app.tool()
def fail(message: str) -> str:
    """Fail with this message (an error the tool reports, isError in the result)."""
    raise ToolError(message)


@app.tool()
def read_file(path: str) -> str:
    """Read a file and return its text, or the error."""
    try:
        return "READ:" + Path(path).read_text()
    except OSError as exc:
        return f"ERROR: {type(exc).__name__}: {exc.strerror}"


@app.tool()
def connect(host: str, port: int) -> str:
    """Open a TCP connection and say whether it worked."""
    try:
        with socket.create_connection((host, port), timeout=5):
            return "CONNECTED"
    except OSError as exc:
        return f"ERROR: {type(exc).__name__}: {exc}"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        app.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        app.run()
