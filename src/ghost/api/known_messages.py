"""Messages a client has sent before, validated and converted once.

Chat clients resend the whole conversation every turn. A plain message — exactly a role and a text
`content`, the shape of nearly all of them — is valid or not by those two strings alone, and its
OpenAI shape follows from them, so once one has been validated its conversion is remembered and a
resent copy is not validated again: a turn validates what is new. Kept per workspace (no user can
time whether another sent some text), bounded by the characters held.

A conversation's known beginning is found first as a whole (`ghost.plainprefix`: a few list
comparisons instead of a lookup per message); the message memo answers for the rest (a chat edited
in the middle, a message seen in another chat).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from ghost.plainprefix import PlainPrefixes

MAX_KNOWN_CHARS = 8_000_000  # texts kept as keys, in all
MAX_KNOWN_TEXT = 200_000  # a longer text is validated every time rather than held
MAX_KNOWN = 200_000

_Key = tuple[str, str, str]  # workspace, role, content


def _key(workspace: str, message: Any) -> _Key | None:
    """The memo key of a plain message, else None (anything else is validated every time)."""
    if type(message) is not dict or len(message) != 2:
        return None
    role, content = message.get("role"), message.get("content")
    # A tool message's shape depends on the messages before it (its call id is matched to them).
    if type(role) is not str or role == "tool" or type(content) is not str or len(content) > MAX_KNOWN_TEXT:
        return None
    return workspace, role, content


class KnownMessages:
    def __init__(self) -> None:
        self._converted: OrderedDict[_Key, dict[str, Any]] = OrderedDict()
        self._chars = 0
        self._chats: PlainPrefixes[dict[str, Any]] = PlainPrefixes(copy=dict)

    def leading(self, workspace: str, raw: list[Any]) -> list[dict[str, Any]]:
        """The converted copies of `raw`'s leading messages that are known, up to the first that is not."""
        known = self._chats.known(workspace, raw)
        for message in raw[len(known):]:
            key = _key(workspace, message)
            converted = self._converted.get(key) if key is not None else None
            if converted is None:
                break
            self._converted.move_to_end(key)  # type: ignore[arg-type]
            known.append(dict(converted))
        return known

    def learn(self, workspace: str, raw: list[Any], converted: list[dict[str, Any]], known: int = 0) -> None:
        """Remember the plain ones of `raw` (validated) as `converted` (their OpenAI shapes, in order);
        `known`: how many leading ones `leading` gave (remembered already)."""
        self._chats.remember(workspace, raw, converted, known)
        for message, shaped in zip(raw[known:], converted[known:]):
            key = _key(workspace, message)
            if key is None or key in self._converted:
                continue
            self._converted[key] = dict(shaped)
            self._chars += len(key[2])
            while self._chars > MAX_KNOWN_CHARS or len(self._converted) > MAX_KNOWN:
                (_, _, text), _ = self._converted.popitem(last=False)
                self._chars -= len(text)

    def clear(self) -> None:
        self._converted.clear()
        self._chars = 0
        self._chats.clear()


known_messages = KnownMessages()  # used from the event loop only
