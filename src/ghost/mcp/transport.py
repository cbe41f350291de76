"""The stdio transport for a server Ghost started itself (sandboxed or not).

The SDK's own `stdio_client` spawns its process; a sandboxed server has to be started by Ghost
(bubblewrap, the limits handshake, the cgroup), so this adapter takes the started process's
pipes and gives the SDK's `Client` the two message streams it expects: newline-delimited
JSON-RPC, one message a line, as the stdio transport defines. A line longer than the message
limit ends the connection (the server is restarted) instead of growing a buffer without end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import mcp_types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.client._transport import TransportStreams
from mcp.shared.message import SessionMessage

from ghost.mcp.launch import ServerProcess

log = logging.getLogger("ghost.mcp")
PARSE_OFF_LOOP_BYTES = 64 * 1024  # larger messages are parsed in a thread, not on the event loop
STDERR_TAIL_LINES = 20


class Link:
    """What the supervisor learns from a transport: that it ended, and why; the server's stderr."""

    def __init__(self) -> None:
        self.lost = asyncio.Event()
        self.reason = ""
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)

    def end(self, reason: str) -> None:
        if not self.lost.is_set():
            self.reason = reason
            self.lost.set()


@asynccontextmanager
async def stdio_transport(server: ServerProcess, link: Link, max_message_bytes: int) -> AsyncIterator[TransportStreams]:
    stdout, stdout_pipe = await _reader(server.stdout_fd, max_message_bytes)
    stderr, stderr_pipe = await _reader(server.stderr_fd, 64 * 1024)
    to_session, session_reads = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    session_writes, from_session = anyio.create_memory_object_stream[SessionMessage](0)
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_read_messages, stdout, to_session, link, max_message_bytes)
            tasks.start_soon(_write_messages, from_session, server.stdin, link)
            tasks.start_soon(_read_stderr, stderr, link)
            try:
                yield session_reads, session_writes
            finally:
                tasks.cancel_scope.cancel()
    finally:
        for pipe in (stdout_pipe, stderr_pipe):
            pipe.close()
        for stream in (to_session, session_reads, session_writes, from_session):
            stream.close()


async def _reader(fd: int, limit: int) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit)
    try:
        pipe, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0))
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    return reader, pipe


async def _read_messages(stdout: asyncio.StreamReader, to_session: MemoryObjectSendStream[SessionMessage | Exception],
                         link: Link, max_bytes: int) -> None:
    async with to_session:
        while True:
            try:
                line = await stdout.readuntil(b"\n")
            except asyncio.IncompleteReadError:
                link.end("the server closed its output (it exited)")
                return
            except asyncio.LimitOverrunError:
                link.end(f"the server sent a message larger than {max_bytes:,} bytes (--mcp-message-max-bytes)")
                return
            if line.strip():
                await to_session.send(await _parse(line))


async def _parse(line: bytes) -> SessionMessage | Exception:
    """A message, or the parse error as a value (the SDK's session reports it and goes on)."""
    try:
        if len(line) > PARSE_OFF_LOOP_BYTES:
            message = await asyncio.to_thread(mcp_types.jsonrpc_message_adapter.validate_json, line, by_name=False)
        else:
            message = mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False)
    except ValueError as exc:
        log.warning("an MCP server wrote a line that is not a JSON-RPC message: %s", str(exc)[:200])
        return exc
    return SessionMessage(message)


async def _write_messages(from_session: MemoryObjectReceiveStream[SessionMessage], stdin: asyncio.StreamWriter,
                          link: Link) -> None:
    async with from_session:
        async for message in from_session:
            data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
            try:
                stdin.write(data.encode() + b"\n")
                await stdin.drain()
            except (BrokenPipeError, ConnectionResetError, RuntimeError):
                link.end("the server closed its input (it exited)")
                return


async def _read_stderr(stderr: asyncio.StreamReader, link: Link) -> None:
    """Keep the last lines for /api/health and the log; never let a chatty server block on it."""
    while chunk := await stderr.read(64 * 1024):
        for line in chunk.decode("utf-8", "replace").splitlines():
            if line.strip():
                link.stderr_tail.append(line[:500])
                log.debug("mcp server stderr: %s", line[:500])
