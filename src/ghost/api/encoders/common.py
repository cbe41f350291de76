"""What every encoder shares: identity of the reply, activity text, and the collected turn."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ghost.events import (ClientToolCall, Done, Error, Event, Notice, ReasoningDelta, TextDelta,
                          ToolActivity, ToolCall, TurnStats, Usage)


@dataclass(frozen=True)
class ReplyInfo:
    """Who is answering: the same for every chunk of one reply."""

    request_id: str
    model: str
    show_activity: bool = True
    include_usage: bool = False
    created: int = field(default_factory=lambda: int(time.time()))
    started: float = field(default_factory=time.perf_counter)

    @property
    def completion_id(self) -> str:
        return f"chatcmpl-{self.request_id}"

    def created_at(self) -> str:
        return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")

    def elapsed_ns(self) -> int:
        return int((time.perf_counter() - self.started) * 1e9)


def activity_text(event: ToolActivity) -> str:
    return event.text + "\n"


def notice_text(event: Notice) -> str:
    return f"\n[Ghost: {event.text}]\n"


def stream_error_text(event: Error) -> str:
    """An error after the answer began, as answer text for clients that show nothing else."""
    return f"\n\n[Ghost error: {event.message}]"


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass
class CollectedTurn:
    """A whole turn gathered from its events: what a non-streaming reply is made of."""

    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage | None = None
    done: Done | None = None
    stats: TurnStats | None = None
    notices: list[str] = field(default_factory=list)

    def add(self, event: Event, show_activity: bool) -> None:
        if isinstance(event, TextDelta):
            self.text.append(event.text)
        elif isinstance(event, ReasoningDelta):
            self.reasoning.append(event.text)
        elif isinstance(event, ToolActivity) and show_activity:
            self.reasoning.append(activity_text(event))
        elif isinstance(event, ClientToolCall):
            self.tool_calls.extend(event.calls)
        elif isinstance(event, Usage):
            self.usage = event
        elif isinstance(event, Done):
            self.done = event
        elif isinstance(event, Notice):
            self.notices.append(event.text)
        elif isinstance(event, TurnStats):  # (heartbeats and anything else: nothing to keep)
            self.stats = event

    def server_timing(self, total_seconds: float) -> str:
        """A Server-Timing header value: where the turn's time went."""
        parts = [f"total;dur={total_seconds * 1000:.1f}"]
        if self.stats is not None:
            parts += [f"upstream;dur={self.stats.upstream_seconds * 1000:.1f}",
                      f"tools;dur={self.stats.tool_seconds * 1000:.1f}",
                      f'rounds;desc="{self.stats.rounds}"']
        return ", ".join(parts)

    @property
    def content(self) -> str:
        return "".join(self.text)

    @property
    def finish_reason(self) -> str:
        return self.done.finish_reason if self.done else "stop"
