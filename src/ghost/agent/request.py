"""The chat request as the agent takes it: wire-neutral, messages already OpenAI-shaped.

The chat routes build it from either wire format (`ghost.api.openai_request`, with the Ollama
parts adapted by `ghost.api.ollama_request`); the agent never sees a request body.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ChatRequest:
    messages: list[dict[str, Any]]  # OpenAI-shaped, as the upstream takes them
    model: str  # as the client named it; "" for the default model
    stream: bool
    session_id: str | None = None  # asked for by the client; the service decides where it is stored
    client_tools: list[dict[str, Any]] = field(default_factory=list)
    sampling: dict[str, Any] = field(default_factory=dict)  # the fields an agent turn sends upstream
    # A `-plain` model's fields instead: all the client sent (None: `sampling`). See ghost.api.chat_params.
    relay: dict[str, Any] | None = None
    refused: str | None = None  # why an agent model cannot take this request (400), naming the parameter
    include_usage: bool = False
    tool_choice: Any = None
    # The client's context window for this turn (Ollama's `options.num_ctx`): fitted into when it is
    # smaller than the upstream's, never larger than it (ghost.agent.context).
    context_window: int | None = None
    store: bool = True  # False: answer the turn and keep no history of it (Responses `store: false`)
