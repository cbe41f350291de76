"""An in-process `Upstream` for unit tests of the agent: replies from a script, no network.

The HTTP-level fake (`ghost.testing.fake_upstream`) is what end-to-end tests use; this one lets a
test drive `AgentTurn` or `ChatService` directly, and see exactly what each call was sent.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ghost.errors import UpstreamError
from ghost.events import ToolCall, Usage
from ghost.llm.chat import Completion, Delta
from ghost.llm.embeddings import Embeddings

CHUNK_CHARS = 8


@dataclass
class ScriptedReply:
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage | None = None
    error: UpstreamError | None = None  # raised instead of replying


@dataclass
class ScriptedUpstream:
    replies: list[ScriptedReply]
    models: list[str] = field(default_factory=lambda: ["scripted"])
    url: str = "scripted://"
    sent: list[dict[str, Any]] = field(default_factory=list)  # every payload, in order

    def upstream_model(self, served_name: str) -> str:
        return served_name

    async def stream_chat(self, payload: dict[str, Any], request_id: str) -> AsyncIterator[Delta | Completion]:
        self.sent.append(copy.deepcopy(payload))  # as sent: the turn goes on to extend its lists
        if not self.replies:
            raise UpstreamError("the script has no more replies")
        reply = self.replies.pop(0)
        if reply.error is not None:
            raise reply.error
        for start in range(0, len(reply.text), CHUNK_CHARS):  # streamed in pieces, like a real server
            yield Delta("content", reply.text[start:start + CHUNK_CHARS])
        yield Completion(reply.tool_calls, "tool_calls" if reply.tool_calls else "stop", reply.usage)

    async def embed(self, model: str, inputs: list[str], request_id: str) -> Embeddings:
        raise UpstreamError("the scripted upstream has no embeddings")

    async def health(self) -> dict[str, Any]:
        return {"url": self.url, "reachable": True}
