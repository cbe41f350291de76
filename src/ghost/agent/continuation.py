"""Which session a chat turn belongs to: the rule that keeps one-shot requests from clobbering a chat.

- With a session id (`session_id` in the body, or the `X-Ghost-Session` header): the turn is stored
  under that id if the id has no conversation yet, or if the request is that conversation — it opens
  with the same first user message (a next turn, a regenerated or edited one). A request that
  carries the id but opens differently (Open WebUI's title, tag and follow-up tasks carry the chat's
  id) is answered and not stored: the chat stays as it was.
- Without one: the turn continues the stored conversation that the request's earlier messages
  equal or extend (the longest such, the newest of a tie); else it starts a new session with a
  fresh id. Nothing stored is ever replaced by a request that does not continue it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from ghost.store.conversation import opening_digest, prefix_digests
from ghost.store.history import History


@dataclass(frozen=True)
class Placement:
    """Where a turn is stored: `session_id` (None: nowhere), and the session's write count as the
    turn found it (a write after that is another turn's: ghost.store.history.append_turn)."""

    session_id: str | None
    seen_writes: int = 0
    # The chain digests of the conversation's first messages, when finding the session took them:
    # the history write goes on from the last instead of hashing them again.
    chained: tuple[str, ...] = ()


NOWHERE = Placement(None)


def new_session_id() -> str:
    return f"chat-{uuid.uuid4().hex[:16]}"


async def session_for(history: History, messages: list[dict[str, Any]], asked: str | None) -> Placement:
    """The session this turn's conversation is stored under; session None: answer it, store nothing."""
    if asked is not None:
        head = await history.head(asked)
        if head is None:
            return Placement(asked)
        return Placement(asked, head.writes) if head.opening == opening_digest(messages) else NOWHERE
    chained = tuple(prefix_digests(messages[:-1]))
    continued = await history.continued_by(list(chained))
    if continued is None:
        return Placement(new_session_id(), chained=chained)
    return Placement(continued.session_id, continued.writes, chained)
