"""A lean HTTP/1.1 keep-alive connection pool to the upstream, for the catch-all proxy.

Why not the shared httpx client: a proxied request does nothing but move bytes, and on this path
httpx + httpcore cost several times what the rest of Ghost does per request (an anyio cancel scope
per socket operation, h11 validation, URL re-parsing, a pool that polls every idle socket on every
request). This pool speaks just what a byte-forwarding proxy needs, on asyncio protocols and the
httptools parser uvicorn already uses:

- requests with a Content-Length body (written with the head in one send when small) or a chunked
  body, streamed from an async iterator with write flow control;
- responses streamed chunk by chunk (de-chunked, never decompressed), with read flow control, so
  neither direction is held in memory;
- a connect timeout, a read timeout (silence between bytes) and a write timeout, raised as
  `UpstreamTimeout`; connection failures as `UpstreamUnavailable`;
- keep-alive reuse only of connections whose last exchange completed cleanly; a request whose
  body is already in memory is retried once on a fresh connection if a reused one turns out to
  have been closed by the upstream.

Not supported, because the proxy strips or never sends what would need them: 1xx interim
responses, upgrades, pipelining. An https upstream is reached through asyncio's TLS transport.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

from ghost.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable

SMALL_BODY = 64 * 1024  # bodies up to this size go out with the head in one write
READ_HIGH_WATER = 256 * 1024  # buffered response bytes before reading from the upstream pauses


class _Timer:
    """Raise UpstreamTimeout into a waiting future if no progress is made in time."""

    __slots__ = ("loop", "seconds", "what")

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float, what: str) -> None:
        self.loop, self.seconds, self.what = loop, seconds, what

    async def wait(self, future: asyncio.Future[None]) -> None:
        handle = self.loop.call_later(self.seconds, self._expire, future)
        try:
            await future
        finally:
            handle.cancel()

    def _expire(self, future: asyncio.Future[None]) -> None:
        if not future.done():
            future.set_exception(UpstreamTimeout(f"upstream {self.what} timed out after {self.seconds:g}s"))


class Connection(asyncio.Protocol):
    """One keep-alive connection; carries one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.lost: BaseException | None = None  # set once the connection is gone
        self.reused = False
        self.in_use = True
        self._write_ready: asyncio.Future[None] | None = None
        self._reset_exchange()

    def _reset_exchange(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.headers_done = False
        self.complete = False
        self.keep_alive = True
        self.got_bytes = False
        self._waiter: asyncio.Future[None] | None = None
        self._reading_paused = False

    # --- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.in_use:  # nothing was asked: whatever this is, the connection is not trustworthy
            self.close()
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"upstream sent malformed HTTP: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionResetError("closed by the upstream")
        if self.headers_done and not self.complete and self._close_delimited():
            self.complete = True  # a body with neither length nor chunking ends where the connection does
            self._wake()
            return
        self._fail(UpstreamUnavailable(f"upstream connection lost: {self.lost}"))
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_exception(UpstreamUnavailable("upstream closed the connection while sending"))

    def pause_writing(self) -> None:
        self._write_ready = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)
        self._write_ready = None

    # --- httptools callbacks -----------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > READ_HIGH_WATER and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # --- exchange -------------------------------------------------------------------------------------
    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)

    def _close_delimited(self) -> bool:
        names = {name for name, _ in self.headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    async def wait(self, timer: _Timer) -> None:
        """Wait for the parser to make progress (or the connection to fail)."""
        if self.lost is not None and not self.complete:
            raise UpstreamUnavailable(f"upstream connection lost: {self.lost}")
        self._waiter = self.loop.create_future()
        await timer.wait(self._waiter)

    async def write(self, data: bytes, timer: _Timer) -> None:
        if self.lost is not None or self.transport is None:
            raise UpstreamUnavailable(f"upstream connection lost: {self.lost}")
        self.transport.write(data)
        if self._write_ready is not None:
            await timer.wait(self._write_ready)

    def take(self) -> bytes:
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        if self._reading_paused and self.buffered <= READ_HIGH_WATER // 2 and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return chunk

    def body_if_complete(self) -> bytes | None:
        """The whole body, if it has already arrived in full (typical for a small reply)."""
        if not self.complete:
            return None
        body = b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        return body

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and self.lost is None and not self.chunks

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Response:
    """The upstream's status and headers, and its body as an async iterator of chunks."""

    def __init__(self, pool: "Pool", conn: Connection, timer: _Timer, head_only: bool) -> None:
        self.pool, self.conn, self.timer = pool, conn, timer
        self.status = conn.status
        self.headers = conn.headers
        self._done = head_only
        self._released = False

    def read_if_complete(self) -> bytes | None:
        """The whole body if it is already here, releasing the connection; else None (stream it)."""
        body = b"" if self._done else self.conn.body_if_complete()
        if body is not None:
            self._release(reusable=not self._done and self.conn.reusable())
        return body

    def __aiter__(self) -> "Response":
        return self

    async def __anext__(self) -> bytes:
        conn = self.conn
        while not conn.chunks:
            if self._done or conn.complete:
                await self.aclose()
                raise StopAsyncIteration
            await conn.wait(self.timer)
        return conn.take()

    async def aclose(self) -> None:
        """Give the connection back if the exchange finished cleanly, else close it."""
        self._release(reusable=not self._done and self.conn.reusable())

    def _release(self, *, reusable: bool) -> None:
        if not self._released:
            self._released = True
            self.pool.release(self.conn, reusable=reusable)


class Pool:
    """Keep-alive connections to one `http://host:port` origin, at most `max_connections` at once."""

    def __init__(self, base_url: str, *, max_connections: int, connect_timeout: float,
                 read_timeout: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) upstream URL: {base_url!r}")
        self.host, self.port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self.prefix = parts.path.rstrip("/").encode()
        self.host_header = parts.netloc.encode()
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._idle: list[Connection] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._all: set[Connection] = set()

    async def request(self, method: str, target: bytes, headers: list[tuple[bytes, bytes]],
                      body: AsyncIterator[bytes] | None, content_length: int | None) -> Response:
        """Send one request and return once the upstream's headers are in.

        `target` is the path and query as the client sent them; `content_length` None with a body
        means the body goes out chunked. The caller must `aclose()` the response.
        """
        head = self._head(method, target, headers, body, content_length)
        payload = None
        if body is not None and content_length is not None and content_length <= SMALL_BODY:
            payload = b"".join([chunk async for chunk in body])
            head, body = head + payload, None
        try:
            return await self._exchange(method, head, body, content_length)
        except _StaleConnection:
            # The upstream closed a kept-alive connection just as we reused it. Nothing of the
            # client's body was consumed beyond `payload`, so the request can go again.
            return await self._exchange(method, head, None, content_length, fresh=True)

    def _head(self, method: str, target: bytes, headers: list[tuple[bytes, bytes]],
              body: AsyncIterator[bytes] | None, content_length: int | None) -> bytes:
        lines = [method.encode(), b" ", self.prefix + target, b" HTTP/1.1\r\nhost: ", self.host_header, b"\r\n"]
        for name, value in headers:
            lines += [name, b": ", value, b"\r\n"]
        if content_length is not None:  # also an explicit 0: some servers insist on it for a POST
            lines.append(b"content-length: %d\r\n" % content_length)
        elif body is not None:
            lines.append(b"transfer-encoding: chunked\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    async def _exchange(self, method: str, head: bytes, body: AsyncIterator[bytes] | None,
                        content_length: int | None, fresh: bool = False) -> Response:
        conn = await self._acquire(fresh)
        timer = _Timer(conn.loop, self.read_timeout, "read")
        try:
            await conn.write(head, timer)
            if body is not None:
                await self._send_body(conn, body, chunked=content_length is None, timer=timer)
            while not conn.headers_done:
                await conn.wait(timer)
        except UpstreamUnavailable as exc:
            self.release(conn, reusable=False)
            if conn.reused and body is None and not conn.got_bytes:
                raise _StaleConnection from exc
            raise
        except BaseException:
            self.release(conn, reusable=False)
            raise
        return Response(self, conn, timer, head_only=method == "HEAD")

    @staticmethod
    async def _send_body(conn: Connection, body: AsyncIterator[bytes], *, chunked: bool, timer: _Timer) -> None:
        async for chunk in body:
            if chunk:
                await conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk, timer)
        if chunked:
            await conn.write(b"0\r\n\r\n", timer)

    async def _acquire(self, fresh: bool) -> Connection:
        if not self._slots.locked():
            await self._slots.acquire()  # free now: skip wait_for, which costs a task per call
        else:
            try:
                await asyncio.wait_for(self._slots.acquire(), self.connect_timeout)
            except TimeoutError as exc:
                raise UpstreamTimeout("no free upstream connection in time (--upstream-max-connections)") from exc
        while self._idle and not fresh:
            conn = self._idle.pop()
            if conn.lost is None and conn.transport is not None and not conn.transport.is_closing():
                conn.reused = conn.in_use = True
                conn._reset_exchange()
                return conn
            self._all.discard(conn)
        try:
            return await self._connect()
        except BaseException:
            self._slots.release()
            raise

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: Connection(loop), self.host, self.port, ssl=self.ssl),
                self.connect_timeout)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"connecting to the upstream timed out after {self.connect_timeout:g}s") from exc
        except OSError as exc:
            raise UpstreamUnavailable(f"upstream unreachable: {exc.strerror or exc}") from exc
        self._all.add(conn)
        return conn

    def release(self, conn: Connection, *, reusable: bool) -> None:
        if reusable:
            conn.parser = httptools.HttpResponseParser(conn)
            conn.in_use = False
            self._idle.append(conn)
        else:
            conn.close()
            self._all.discard(conn)
        self._slots.release()

    async def aclose(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._idle.clear()
        self._all.clear()


class _StaleConnection(Exception):
    """A reused connection failed before the upstream said anything: safe to send again."""
