"""Split `<think>…</think>` blocks out of streamed content, even when a tag spans chunks."""

from __future__ import annotations

from typing import Literal

Kind = Literal["content", "reasoning"]
OPEN, CLOSE = "<think>", "</think>"


def _partial_tag_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


class ThinkSplitter:
    def __init__(self) -> None:
        self.inside = False
        self._pending = ""

    @property
    def kind(self) -> Kind:
        return "reasoning" if self.inside else "content"

    def feed(self, text: str) -> list[tuple[Kind, str]]:
        if not self._pending and "<" not in text:  # the common case: no tag can start here
            return [(self.kind, text)] if text else []
        out: list[tuple[Kind, str]] = []
        buffer = self._pending + text
        self._pending = ""
        while buffer:
            tag = CLOSE if self.inside else OPEN
            index = buffer.find(tag)
            if index >= 0:
                self._emit(out, buffer[:index])
                buffer = buffer[index + len(tag):]
                self.inside = not self.inside
                continue
            keep = _partial_tag_suffix(buffer, tag)
            self._emit(out, buffer[: len(buffer) - keep])
            self._pending = buffer[len(buffer) - keep:]
            break
        return out

    def flush(self) -> list[tuple[Kind, str]]:
        out: list[tuple[Kind, str]] = []
        self._emit(out, self._pending)
        self._pending = ""
        return out

    def _emit(self, out: list[tuple[Kind, str]], text: str) -> None:
        if text:
            out.append((self.kind, text))


def strip_think(text: str) -> str:
    """Content with every <think> block removed (for messages sent back upstream)."""
    splitter = ThinkSplitter()
    parts = splitter.feed(text) + splitter.flush()
    return "".join(piece for kind, piece in parts if kind == "content")
