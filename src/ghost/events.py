"""The typed events one agent turn yields. Encoders turn them into wire formats; nothing here
knows about SSE, NDJSON or `choices[0].delta`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class TextDelta:
    """A piece of the answer, as the upstream produced it."""

    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    """A piece of the model's own reasoning (reasoning_content or a <think> block)."""

    text: str


CompactionKind = Literal["tool_results", "summary"]


@dataclass(frozen=True)
class ToolActivity:
    """Ghost running one of its tools: shown to people, never part of the answer."""

    name: str
    phase: Literal["start", "end"]
    text: str  # one human-readable line
    ok: bool = True
    # Set on the end of the context fitting's work (name "context"): how it shrank the conversation,
    # for the metrics (the text is for people and may change). Not on the wire.
    compaction: CompactionKind | None = None


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # raw JSON string, as the model produced it
    problem: str = ""  # set when the upstream sent a malformed call: the model is told, nothing runs

    def arguments_object(self) -> Any:
        import json

        try:
            return json.loads(self.arguments) if self.arguments else {}
        except ValueError:
            return self.arguments

    def openai_object(self) -> dict[str, Any]:
        """The call as OpenAI's `tool_calls` entries carry it (requests and replies alike)."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class ClientToolCall:
    """The model called a tool the client supplied: the turn ends and the call goes back."""

    calls: tuple[ToolCall, ...]


@dataclass(frozen=True)
class Usage:
    """Tokens the whole turn cost, summed over every upstream call."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Done:
    finish_reason: str  # "stop" | "length" | "tool_calls"
    stop_reason: str = ""  # why Ghost stopped, when it was Ghost ("max_tool_rounds")


@dataclass(frozen=True)
class Error:
    message: str
    type: str


@dataclass(frozen=True)
class TurnStats:
    """Where the turn's time went (for Server-Timing and logs; no wire format shows it)."""

    upstream_seconds: float
    tool_seconds: float
    rounds: int


@dataclass(frozen=True)
class Notice:
    """Something the client should know about the turn that is not part of the answer (the
    history could not be saved): an X-Ghost-Warning header, or a note in the stream."""

    text: str


@dataclass(frozen=True)
class Heartbeat:
    """Nothing happened for a while; lets encoders keep idle connections alive."""


Event = (TextDelta | ReasoningDelta | ToolActivity | ClientToolCall | Usage | TurnStats | Done | Error | Heartbeat
         | Notice)
