"""A resent conversation's known beginning, found by comparing lists, not message by message.

Chat clients resend the whole conversation every turn. What Ghost derives from each message (its
validated, converted shape; its digest in the chain) is remembered, but looking each message up
costs a few Python operations per message, every turn. `PlainPrefixes` remembers, per conversation
(keyed by its opening message), the messages it saw last and one value per message; a request's
known part is then found with a handful of list comparisons, each one C loop over the messages,
and only what is new is handled one by one.

Only plain messages are remembered — exactly `{"role": ..., "content": ...}` with two strings, and
not a tool message (its shape depends on the messages before it) — so that two messages that
compare equal are the same JSON: a string equals nothing but the same string, whereas `1 == 1.0 ==
True` would let a different value pass inside a tool call's arguments. A remembered conversation
ends at its first message that is not plain. Kept per scope (a workspace: no user can time whether
another sent some text) and bounded by the characters its texts hold.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
MAX_CHARS = 4_000_000  # texts held by one memo, in all
MAX_CONVERSATIONS = 10_000

_Key = tuple[str, str, str]  # scope, the opening's role, its text


def is_plain(message: Any) -> bool:
    if type(message) is not dict or len(message) != 2:
        return False
    role, content = message.get("role"), message.get("content")
    return type(role) is str and role != "tool" and type(content) is str


@dataclass
class _Seen(Generic[T]):
    messages: list[dict[str, Any]]  # plain, in order: the conversation as last seen
    values: list[T]  # one per message
    chars: int


def _common_length(a: list[Any], b: list[Any]) -> int:
    """How many leading items `a` and `b` share: a binary search over prefix comparisons, each one
    C loop (a prefix that differs has no longer equal prefix)."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    equal, differs = 0, n
    while differs - equal > 1:
        middle = (equal + differs) // 2
        if a[:middle] == b[:middle]:
            equal = middle
        else:
            differs = middle
    return equal


class PlainPrefixes(Generic[T]):
    def __init__(self, copy: Callable[[T], T] | None = None, max_chars: int | None = None) -> None:
        """`copy`: how a value is copied on its way in and out (None: values are immutable);
        `max_chars`: the texts this memo may hold, in all (None: MAX_CHARS)."""
        self._seen: OrderedDict[_Key, _Seen[T]] = OrderedDict()
        self._chars = 0
        self._copy = copy
        self._max_chars = MAX_CHARS if max_chars is None else max_chars

    @staticmethod
    def _key(scope: str, messages: list[Any]) -> _Key | None:
        if not messages or not is_plain(messages[0]):
            return None
        return scope, messages[0]["role"], messages[0]["content"]

    def known(self, scope: str, messages: list[Any]) -> list[T]:
        """The values of `messages`' leading messages that the conversation remembered for their
        opening holds, in order (none if it is not remembered)."""
        key = self._key(scope, messages)
        seen = self._seen.get(key) if key is not None else None
        if seen is None:
            return []
        self._seen.move_to_end(key)  # type: ignore[arg-type]
        values = seen.values[:_common_length(messages, seen.messages)]
        return values if self._copy is None else list(map(self._copy, values))

    def remember(self, scope: str, messages: list[Any], values: list[T], known: int = 0) -> None:
        """Remember `messages` with their `values` (one each) as far as they are plain; `known`: how
        many leading ones `known()` gave for them (they are not looked at again)."""
        key = self._key(scope, messages)
        if key is None:
            return
        old = self._seen.get(key)
        # `known` came from this memo a moment ago; one comparison makes sure nothing replaced it since.
        if old is None or messages[:known] != old.messages[:known]:
            old, known = _Seen([], [], 0), 0
        plain = known
        while plain < len(messages) and plain < len(values) and is_plain(messages[plain]):
            plain += 1
        # What is dropped is counted, not what is kept: a resend differs at its end, if anywhere.
        chars = old.chars - _chars(old.messages[known:]) + _chars(messages[known:plain])
        if chars > self._max_chars:
            return
        # Copies: the request's own dicts go on to the agent, which must not change what is remembered.
        added = values[known:plain] if self._copy is None else map(self._copy, values[known:plain])
        seen = _Seen([*old.messages[:known], *map(dict, messages[known:plain])], [*old.values[:known], *added], chars)
        self._forget(key)
        self._seen[key] = seen
        self._chars += seen.chars
        while self._chars > self._max_chars or len(self._seen) > MAX_CONVERSATIONS:
            self._forget(next(iter(self._seen)))

    def _forget(self, key: _Key) -> None:
        gone = self._seen.pop(key, None)
        if gone is not None:
            self._chars -= gone.chars

    def clear(self) -> None:
        self._seen.clear()
        self._chars = 0


def _chars(messages: list[dict[str, Any]]) -> int:
    return sum(len(message["content"]) for message in messages)
