"""Telling a streamed exchange from a plain one, without holding either body.

A stream must reach the client chunk by chunk with buffering turned off in front; a plain small
reply is cheaper sent whole. The request says so in its JSON (`"stream": true`), noticed as the
body passes through; the reply says so in its content type.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

_STREAM_FLAG = re.compile(rb'"stream"\s*:\s*true')
_FLAG_OVERLAP = 32  # bytes of one chunk kept to find a flag split across two chunks
_STREAMING_TYPES = (b"text/event-stream", b"application/x-ndjson")


def is_streaming_type(content_type: bytes) -> bool:
    return content_type.startswith(_STREAMING_TYPES)


def is_event_stream(content_type: bytes) -> bool:
    return content_type.startswith(b"text/event-stream")


class StreamFlagScanner:
    """Pass request body chunks through while noticing a JSON `"stream": true`.

    `done` is set once the last chunk has been handed on, so the client's connection may then be
    watched for a hang-up without stealing body messages.
    """

    def __init__(self, source: AsyncIterator[bytes]) -> None:
        self.source = source
        self.streaming = False
        self.done = asyncio.Event()
        self._tail = b""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.source:
            if not self.streaming and chunk:
                window = self._tail + chunk
                self.streaming = _STREAM_FLAG.search(window) is not None
                self._tail = window[-_FLAG_OVERLAP:]
            if chunk:
                yield chunk
        self.done.set()
