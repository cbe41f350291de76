"""The upstream's chat-completion wire, shared by the agent's calls (`ghost.llm.chat`) and the
`-plain` relay (`ghost.llm.relay`): the request body, the status check, the reply read as JSON or
as an event stream of chunks, each bounded by `ReplyBounds`.

`ChunkReader` is the stream's reading in one place: every network read is split into its events
and each chunk parsed exactly once, with no async generator in between; the agent's call drives
it from its own loop (`stream_chat`), the relay through `sse_chunks`.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ghost.errors import UpstreamError, error_text, upstream_text
from ghost.llm.bounds import ReplyBounds, read_bounded
from ghost.llm.overflow import context_overflow
from ghost.sse import ServerSentEvent

if TYPE_CHECKING:
    from ghost.llm.transport import UpstreamResponse

MAX_ERROR_BODY = 4096
MAX_ERROR_DETAIL = 300  # characters of the upstream's error text a client is shown
DRAIN_SECONDS = 1.0  # after [DONE]: how long the rest of the body is waited for (to reuse the connection)
DONE = None  # what `ChunkReader` gives for the `[DONE]` marker


async def raise_for_status(response: UpstreamResponse) -> None:
    """Nothing for a 200; else the upstream's error as an `UpstreamError` (or the context overflow
    the turn compacts for), its detail scrubbed and cut."""
    if response.status == 200:
        return
    body = b""
    async for piece in response:
        body += piece
        if len(body) > MAX_ERROR_BODY:
            break
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if (overflow := context_overflow(response.status, parsed)) is not None:
        raise overflow  # the window was exceeded: the turn compacts and retries, or answers 400
    # Scrubbed whole, then cut: a traceback's one useful line (the exception) comes last.
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if error:
        detail = error_text(error)
    else:
        detail = upstream_text(body.decode(errors="replace")) if body.strip() else (response.response.reason or "")
    raise UpstreamError(f"upstream answered {response.status}: {detail[:MAX_ERROR_DETAIL]}")


class ChunkReader:
    """The chunks of an upstream's event stream, read by network read: `feed(bytes)` gives the
    events the read completed that carry a chunk, `close()` those the stream's end completes, and
    `parse(event)` each one's chunk object (`DONE` for the `[DONE]` marker), one at a time, so a
    malformed chunk never costs the good ones before it in the same read.

    Only unnamed (`message`) events carry chunks; an `error` event is the upstream's failure (an
    `{"error": ...}` chunk, which the readers refuse); an event of any other name is not part of
    the chat stream and is skipped. Each event's data is parsed on its own: joining a read's events
    into one JSON array to parse them in one call would let two malformed chunks (`{"a":1},{"b":`
    and `2}`) pass as two valid ones.
    """

    def __init__(self, bounds: ReplyBounds) -> None:
        self.bounds = bounds
        self.parser = bounds.sse_parser()

    def feed(self, piece: bytes) -> list[ServerSentEvent]:
        return [event for event in self.parser.feed(piece) if _carries_chunk(event)]

    def close(self) -> list[ServerSentEvent]:
        return [event for event in self.parser.close() if _carries_chunk(event)]

    def parse(self, event: ServerSentEvent) -> dict[str, Any] | None:
        if event.event == "error":
            return _error_chunk(event, self.bounds)
        data = event.data.strip()
        return DONE if data == b"[DONE]" else parse_object(data, self.bounds, "stream chunk")


def _carries_chunk(event: ServerSentEvent) -> bool:
    return event.event == "error" or (event.event == "message" and bool(event.data.strip()))


async def drain(response: UpstreamResponse) -> None:
    """Read what follows `[DONE]` (normally just the chunked terminator) and drop it, so the pooled
    connection can be reused; a connection whose response was left unread is closed. Never waits
    long on a server that lingers, and holds nothing of what it reads."""
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            async for _ in response:
                pass
    except (TimeoutError, UpstreamError):
        pass  # the connection is not reused (`aclose` closes it); the reply is complete all the same


async def sse_chunks(response: UpstreamResponse, bounds: ReplyBounds) -> AsyncIterator[dict[str, Any] | None]:
    """Each parsed chunk of the upstream's event stream (`ChunkReader`); `DONE` for the `[DONE]`
    marker, after which the rest of the body is drained and the iteration ends."""
    reader = ChunkReader(bounds)
    async for piece in response:
        for event in reader.feed(piece):
            chunk = reader.parse(event)
            yield chunk
            if chunk is DONE:
                await drain(response)
                return
    for event in reader.close():
        chunk = reader.parse(event)
        yield chunk
        if chunk is DONE:
            return


def _error_chunk(event: ServerSentEvent, bounds: ReplyBounds) -> dict[str, Any]:
    """An `event: error` as the `{"error": ...}` chunk the rest of the reading already refuses."""
    try:
        payload = parse_object(event.data, bounds, "error event")
    except UpstreamError:
        return {"error": upstream_text(event.text)[:MAX_ERROR_DETAIL] if event.text.strip()
                else "an error event without a message"}
    return payload if isinstance(payload.get("error"), (dict, str)) else {"error": payload}


# JSON may escape one character as a surrogate pair; a lone surrogate (`"\\udcff"`) is no
# character and has no UTF-8 form: kept, it would fail the reply's encoding, the history's and
# every later request's. Such text gets U+FFFD, as undecodable bytes do.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_lone_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_without_lone_surrogates(k): _without_lone_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_lone_surrogates(item) for item in value]
    return value


def parse_object(data: bytes, bounds: ReplyBounds, what: str) -> dict[str, Any]:
    """`data` parsed as one JSON object within the nesting bound; else an `UpstreamError` naming `what`."""
    bounds.check_depth(data)
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError) as exc:
        shown = data[:120].decode("utf-8", "replace")
        raise UpstreamError(f"upstream sent a malformed {what}: {shown!r}") from exc
    if b"\\u" in data and _SURROGATE_ESCAPE.search(data):  # a substring test first: most chunks have no escape
        parsed = _without_lone_surrogates(parsed)
    if not isinstance(parsed, dict):
        raise UpstreamError(f"upstream sent a {what} that is not a JSON object")
    return parsed


async def read_json(response: UpstreamResponse, bounds: ReplyBounds) -> dict[str, Any]:
    """A whole (non-streamed) reply, bounded, as one JSON object."""
    body = await read_bounded(response, bounds.line_bytes)
    return parse_object(body, bounds, "reply (neither SSE nor a JSON object)")


# --- the request body ---------------------------------------------------------------------------

TOOL_MEMO_ENTRIES = 2048  # encoded tool schemas kept (a catalogue of hundreds, several users' clients)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


class RequestBodies:
    """Chat request bodies as compact UTF-8 JSON (NaN and infinities refused, as JSON has none),
    byte for byte what `json.dumps` makes of the whole payload, with each tool schema encoded once.

    The tool list is most of a turn's request (Ghost's own tools' schemas, ~8 KB) and the same call
    after call; a schema's encoding is remembered under its name, description and the identity of
    its `parameters` (the object is held, so its id cannot be reused) — the key the token counts of
    `ghost.agent.tool_offer.SchemaTokens` use too. Parameters are never changed in place once a
    schema is offered: a tool that changes is a new schema.
    """

    def __init__(self, entries: int = TOOL_MEMO_ENTRIES) -> None:
        self.entries = entries
        self._tools: OrderedDict[tuple[Any, ...], tuple[Any, bytes]] = OrderedDict()

    def encode(self, payload: dict[str, Any]) -> bytes:
        try:
            tools = payload.get("tools")
            if not isinstance(tools, list) or not all(isinstance(key, str) for key in payload):
                return _dumps(payload)
            return b"{" + b",".join(_dumps(key) + b":" + (self._tool_list(value) if key == "tools" else _dumps(value))
                                    for key, value in payload.items()) + b"}"
        except ValueError as exc:
            raise UpstreamError(f"the request for the upstream is not valid JSON: {exc}") from exc

    def _tool_list(self, tools: list[Any]) -> bytes:
        return b"[" + b",".join(self._tool(tool) for tool in tools) + b"]"

    def _tool(self, tool: Any) -> bytes:
        key = _tool_key(tool)
        if key is None:
            return _dumps(tool)
        found = self._tools.get(key)
        if found is not None:
            self._tools.move_to_end(key)
            return found[1]
        encoded = _dumps(tool)
        self._tools[key] = (tool["function"].get("parameters"), encoded)
        if len(self._tools) > self.entries:
            self._tools.popitem(last=False)
        return encoded


_PLAIN_FUNCTION_KEYS = frozenset({"name", "description", "parameters"})


def _tool_key(tool: Any) -> tuple[Any, ...] | None:
    """What a schema's encoding depends on, for the usual `{"type": "function", "function": {name,
    description, parameters}}`; None (encode it afresh) for any other shape."""
    if type(tool) is not dict or tool.keys() != {"type", "function"} or tool["type"] != "function":
        return None
    function = tool["function"]
    if type(function) is not dict or not function.keys() <= _PLAIN_FUNCTION_KEYS:
        return None
    name, description = function.get("name"), function.get("description")
    if type(name) is not str or (description is not None and type(description) is not str):
        return None
    parameters = function.get("parameters")
    if parameters is not None and type(parameters) is not dict:
        return None
    # Key order is part of the encoding: it is in the key, with the identity of the parameters.
    return tuple(tool), tuple(function), name, description, id(parameters)
