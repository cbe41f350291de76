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
from typing import Any

from ghost.store.conversation import opening_digest, prefix_digests
from ghost.store.history import History


def new_session_id() -> str:
    return f"chat-{uuid.uuid4().hex[:16]}"


async def session_for(history: History, messages: list[dict[str, Any]], asked: str | None) -> str | None:
    """The session this turn's conversation is stored under; None: answer it, store nothing."""
    if asked is not None:
        stored = await history.opening(asked)
        return asked if stored is None or stored == opening_digest(messages) else None
    continued = await history.continued_by(prefix_digests(messages[:-1]))
    return continued or new_session_id()
