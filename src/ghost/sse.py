"""Reading Server-Sent Events as the WHATWG HTML standard defines them, a chunk of bytes at a time.

Ghost reads event streams in two places, the upstream's chat stream (`ghost.llm.chat`) and Ghost's
own stream in the terminal client (`ghost.client.sse`); both read them here, so both understand
the whole format: `data:` spread over several lines, `event:` names, `id:`, `retry:`, comment
lines, and lines ending in CRLF, LF or a lone CR (also when a CRLF is split across two chunks).

An event stream may come from a server Ghost does not trust, so what the parser holds is bounded:
`max_line` for the line still arriving, `max_data` for the data of the event still being
collected (its lines together). Past either, `too_large(what, limit)` is raised.

One deliberate leniency: at the end of the stream, an event still being collected (and a last
line without its line end) is dispatched rather than dropped, as Ghost's readers always did, so a
server that leaves out the final blank line is still understood.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from typing import NamedTuple

BOM = b"\xef\xbb\xbf"
MAX_RETRY_DIGITS = 12  # a longer `retry:` is ignored, never handed to int() (whose digit limit raises)


class ServerSentEvent(NamedTuple):  # a tuple: made once per event, so it must be cheap to make
    data: bytes  # the event's data lines joined by "\n", as bytes (JSON parses them directly)
    event: str = "message"
    id: str = ""  # the last event id seen so far in the stream, as the standard has it

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


class SSETooLarge(ValueError):
    """A line, or one event's data, went past the parser's bound."""

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"{what} longer than {limit} bytes")
        self.what, self.limit = what, limit


TooLarge = Callable[[str, int], Exception]


class SSEParser:
    """Incremental: `feed` each chunk as it arrives, `close` at the end; both return the events
    completed so far."""

    def __init__(self, *, max_line: int | None = None, max_data: int | None = None,
                 too_large: TooLarge = SSETooLarge) -> None:
        self.max_line, self.max_data, self.too_large = max_line, max_data, too_large
        self.retry: int | None = None  # the reconnection time the server asked for, in ms
        self._partial: list[bytes] = []  # the line still arriving
        self._partial_bytes = 0
        self._skip_lf = False  # the last chunk ended in CR: a LF opening the next one ends nothing
        self._started = False  # past the stream's opening bytes (and a BOM among them)
        self._head = b""  # opening bytes held while they may still be the start of a BOM
        self._data: list[bytes] = []
        self._data_bytes = 0
        self._event = ""
        self._last_id = ""

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        if not chunk:
            return []
        chunk = self._normalised(chunk)
        *lines, rest = chunk.split(b"\n")
        events: list[ServerSentEvent] = []
        if lines and self._partial:
            lines[0] = b"".join([*self._partial, lines[0]])
            self._partial, self._partial_bytes = [], 0
        for line in lines:
            self._line(line, events)
        if rest:
            self._hold(rest)
        return events

    def close(self) -> list[ServerSentEvent]:
        """The end of the stream: what is still pending, dispatched (see the module's leniency)."""
        events: list[ServerSentEvent] = []
        if self._head:  # the whole stream was a byte or two that looked like a BOM's start
            self._hold(self._head)
            self._head = b""
        if self._partial:
            line = b"".join(self._partial)
            self._partial, self._partial_bytes = [], 0
            self._line(line, events)
        self._dispatch(events)
        return events

    def _normalised(self, chunk: bytes) -> bytes:
        """The chunk with every line end a LF (a BOM opening the stream dropped)."""
        if not self._started:
            chunk = self._without_bom(chunk)
        if self._skip_lf:
            self._skip_lf = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        if b"\r" in chunk:
            self._skip_lf = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return chunk

    def _without_bom(self, chunk: bytes) -> bytes:
        """The stream's first bytes without a BOM; b"" while they may still be the start of one."""
        head = self._head + chunk
        if len(head) < len(BOM) and BOM.startswith(head):
            self._head = head
            return b""
        self._started, self._head = True, b""
        return head[len(BOM):] if head.startswith(BOM) else head

    def _hold(self, piece: bytes) -> None:
        self._partial.append(piece)
        self._partial_bytes += len(piece)
        if self.max_line is not None and self._partial_bytes > self.max_line:
            raise self.too_large("one line", self.max_line)

    def _line(self, line: bytes, events: list[ServerSentEvent]) -> None:
        if not line:
            self._dispatch(events)
            return
        if self.max_line is not None and len(line) > self.max_line:
            raise self.too_large("one line", self.max_line)
        if line.startswith(b"data: "):  # by far the most common line: no partition needed
            self._add_data(line[6:])
            return
        if line.startswith(b":"):
            return  # a comment: keep-alives, markers
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._add_data(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\0" not in value:
                self._last_id = value.decode("utf-8", "replace")
        elif name == b"retry":
            if value.isdigit() and len(value) <= MAX_RETRY_DIGITS:
                self.retry = int(value)

    def _add_data(self, value: bytes) -> None:
        self._data_bytes += len(value) + (1 if self._data else 0)
        if self.max_data is not None and self._data_bytes > self.max_data:
            raise self.too_large("one event's data", self.max_data)
        self._data.append(value)

    def _dispatch(self, events: list[ServerSentEvent]) -> None:
        if self._data:
            data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
            events.append(ServerSentEvent(data, self._event or "message", self._last_id))
        self._data, self._data_bytes, self._event = [], 0, ""


def iter_sse(chunks: Iterable[bytes], parser: SSEParser | None = None) -> Iterator[ServerSentEvent]:
    """The events of a byte stream read synchronously; `parser` carries the bounds (none by default)."""
    parser = parser or SSEParser()
    for chunk in chunks:
        yield from parser.feed(chunk)
    yield from parser.close()


async def aiter_sse(chunks: AsyncIterable[bytes], parser: SSEParser | None = None) -> AsyncIterator[ServerSentEvent]:
    """The events of a byte stream read asynchronously; `parser` carries the bounds (none by default)."""
    parser = parser or SSEParser()
    async for chunk in chunks:
        for event in parser.feed(chunk):
            yield event
    for event in parser.close():
        yield event
