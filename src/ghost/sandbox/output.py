"""Bounded capture of a process's output stream: the head and the tail, with a marker between."""

from __future__ import annotations


class CappedBuffer:
    """Keeps the first half and the last half of `limit` bytes of a stream and counts the rest.

    The head shows how a program started, the tail how it ended (where tracebacks are); the
    middle of a long output is what a model can best do without.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self._head = bytearray()
        self._tail = bytearray()
        self._head_cap = limit // 2
        self._tail_cap = limit - self._head_cap

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self._head_cap - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self._tail += chunk
            if len(self._tail) > 2 * self._tail_cap:  # trim in batches, not on every chunk
                del self._tail[: len(self._tail) - self._tail_cap]

    @property
    def truncated(self) -> bool:
        return self.total > self.limit

    def text(self) -> str:
        tail = bytes(self._tail[-self._tail_cap:]) if self._tail_cap else b""
        if not self.truncated:
            return (bytes(self._head) + tail).decode("utf-8", "replace")
        cut = self.total - len(self._head) - len(tail)
        marker = f"\n[... output truncated: {self.total:,} bytes in all, {cut:,} cut out here ...]\n"
        return bytes(self._head).decode("utf-8", "replace") + marker + tail.decode("utf-8", "replace")
