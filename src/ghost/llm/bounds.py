"""Limits on what one upstream reply may make Ghost hold: the upstream is not trusted either.

An upstream (a misconfigured server, a compromised one, a model in a loop) can stream 150 MB of
text, one 200 MB tool-call argument, hundreds of tool calls or 50,000 nested brackets. Each of
those is cut off here, while it arrives, before it is held whole in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from ghost.config import Settings
from ghost.errors import UpstreamError
from ghost.jsondepth import too_deep
from ghost.sse import SSEParser

# JSON escaping can make one character of text up to 6 bytes on the wire (\uXXXX); a line may
# also carry some envelope around the text.
WIRE_BYTES_PER_CHAR = 6
LINE_ENVELOPE_BYTES = 64 * 1024


class UpstreamTooLarge(UpstreamError):
    """The upstream's reply went past one of Ghost's bounds (a named setting)."""

    error_type = "upstream_reply_too_large"


@dataclass(frozen=True)
class ReplyBounds:
    reply_chars: int
    tool_call_chars: int
    tool_calls: int
    json_depth: int

    @classmethod
    def from_settings(cls, settings: Settings) -> "ReplyBounds":
        return cls(settings.upstream_max_reply_chars, settings.upstream_max_tool_call_chars,
                   settings.upstream_max_tool_calls, settings.upstream_max_json_depth)

    @property
    def line_bytes(self) -> int:
        """Longest line, one SSE event's data, or whole JSON reply Ghost will hold."""
        return max(self.reply_chars, self.tool_call_chars) * WIRE_BYTES_PER_CHAR + LINE_ENVELOPE_BYTES

    def sse_parser(self) -> SSEParser:
        """A parser for the upstream's event stream holding no line, nor event, past `line_bytes`."""
        return SSEParser(max_line=self.line_bytes, max_data=self.line_bytes, too_large=too_large)

    def check_depth(self, data: bytes) -> None:
        if too_deep(data, self.json_depth):
            raise UpstreamTooLarge(f"upstream sent JSON nested deeper than {self.json_depth} levels "
                                   "(--upstream-max-json-depth)")


def too_large(what: str, limit: int) -> UpstreamTooLarge:
    """The error for an SSE line, or one event's data, past `ReplyBounds.line_bytes`."""
    return UpstreamTooLarge(f"upstream sent {what} longer than {limit} bytes (bounded by "
                            "--upstream-max-reply-chars and --upstream-max-tool-call-chars)")


async def read_bounded(chunks: AsyncIterator[bytes], max_bytes: int) -> bytes:
    """A whole (non-streamed) body, refused once it passes `max_bytes`."""
    parts: list[bytes] = []
    held = 0
    async for chunk in chunks:
        held += len(chunk)
        if held > max_bytes:
            raise UpstreamTooLarge(f"upstream reply larger than {max_bytes} bytes (bounded by "
                                   "--upstream-max-reply-chars and --upstream-max-tool-call-chars)")
        parts.append(chunk)
    return b"".join(parts)
