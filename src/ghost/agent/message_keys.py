"""Each message's content hash, and the hash chain over a conversation, carried from turn to turn.

The context fitter (ghost.agent.context) needs every message's content hash (token counts are
cached by it) and, when the conversation does not fit, the chain of hashes over its messages (a
summary is found by the hash of the messages it covers). Chat clients resend the whole
conversation every turn, so without a memo each turn hashes every message again: ~0.2 ms of
Ghost's CPU a turn at 200 messages, most of what the fitter adds for a long chat.

`CarriedKeys` remembers, per conversation, the keys and chain steps of its plain messages
(ghost.plainprefix: the known beginning found by a few list comparisons, each one C loop), so a
turn hashes only what is new. The keys stay content hashes: a message found equal to a remembered
one has the same role and text, so the same key. One per workspace (ContextServices), bounded by
the characters it holds: no user can time whether another sent some text.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from ghost.agent.tokens import message_key
from ghost.plainprefix import PlainPrefixes, is_plain

MAX_CHARS = 1_000_000  # texts held per workspace (shared with the request's own strings, not copied)


def chain_step(previous: bytes, key: bytes) -> bytes:
    """The chain's hash once the message with `key` is added after `previous`."""
    return hashlib.blake2b(previous + key, digest_size=16).digest()


@dataclass(frozen=True)
class Keyed:
    """The keys of a conversation's leading plain messages and the chain over them."""

    keys: list[bytes]  # keys[i]: message i's content hash
    chain: list[bytes]  # chain[i]: the hash of messages [0, i) (chain[0] = b""); one more than keys


class CarriedKeys:
    def __init__(self, max_chars: int = MAX_CHARS) -> None:
        self._memo: PlainPrefixes[tuple[bytes, bytes]] = PlainPrefixes(max_chars=max_chars)
        self.hashed = 0  # messages hashed here, for the tests

    def leading(self, messages: list[dict[str, Any]]) -> Keyed:
        """Keys and chain of `messages`' leading plain messages: remembered ones as they were, the
        new ones hashed now (and remembered for the next turn)."""
        known = self._memo.known("", messages)
        steps = list(known)
        previous = steps[-1][1] if steps else b""
        for message in messages[len(steps):]:
            if not is_plain(message):
                break
            key = message_key(message)
            previous = chain_step(previous, key)
            steps.append((key, previous))
        self.hashed += len(steps) - len(known)
        if len(steps) > len(known):
            self._memo.remember("", messages, steps, len(known))
        return Keyed([key for key, _ in steps], [b"", *(chain for _, chain in steps)])

    def clear(self) -> None:
        self._memo.clear()
