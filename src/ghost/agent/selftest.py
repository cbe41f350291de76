"""The start-up self-test of a model: one short agent round, as a user's first chat would make it.

Sent once the bundled model server answers HTTP (ghost.llm.embedded), with Ghost's own system
prompt and tool schemas, so that
- the model proves it can read a prompt of many tokens and answer (a server that crashes or
  answers wrongly is caught at start, not on the user's first chat);
- that prompt is then in the model's cache: llama.cpp reuses the longest common prefix of the
  previous prompt, and a user's first chat starts with the very same system prompt and tools.

No tool runs (the round limit is 0): a tool call the model asks for is a well-formed answer too.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from ghost.events import Done, TextDelta, Usage
from ghost.agent.request import ChatRequest
from ghost.agent.turn import AgentTurn, TurnOptions, TurnServices
from ghost.errors import GhostError

QUESTION = "Reply with one word: ready."
MAX_TOKENS = 8


async def self_test(services: TurnServices, model: str, timeout: float) -> dict[str, Any]:
    """{ok, seconds, error, prompt_tokens}: did the model answer one chat with Ghost's prompt."""
    request = ChatRequest(messages=[{"role": "user", "content": QUESTION}], model=model, stream=True,
                          sampling={"max_tokens": MAX_TOKENS, "temperature": 0})
    # A request id like any other: the model server refuses one that is not a UUID.
    turn = AgentTurn(services, request, uuid.uuid4().hex, TurnOptions(max_tool_rounds=0))
    started = time.perf_counter()
    events: list[Any] = []
    try:
        async with asyncio.timeout(timeout):
            events = [event async for event in turn.run()]
        error = _wrong_answer(events)
    except TimeoutError:
        error = f"no answer within {timeout:.0f}s"
    except GhostError as exc:
        error = exc.message
    usage = next((e for e in events if isinstance(e, Usage)), None)
    return {"ok": not error, "seconds": round(time.perf_counter() - started, 2), "error": error or None,
            "prompt_tokens": usage.prompt_tokens if usage else None}


def _wrong_answer(events: list[Any]) -> str:
    """Why the reply does not count as an answer ("" if it does)."""
    done = next((e for e in events if isinstance(e, Done)), None)
    if done is None:
        return "the reply never finished"
    if done.stop_reason == "max_tool_rounds":
        return ""  # the model asked for a tool: its call was well-formed
    if not "".join(e.text for e in events if isinstance(e, TextDelta)).strip():
        return "the reply was empty"
    return ""
