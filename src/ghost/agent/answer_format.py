"""Structured output on an agent turn: which upstream call carries the `response_format`.

A `response_format` (JSON mode, or a JSON schema) constrains every token of the call it is sent
on. llama.cpp, vLLM and Ollama all enforce it with a grammar over the whole reply, and a tool call
(`<tool_call>` markup, or the server's tool-call grammar) is not JSON of the client's schema: sent
on a call that offers tools, the format leaves the model no way to call one — or, on servers that
refuse the pair, fails the request. So on an agent turn with a format:

- the tool rounds are sent without it, and whatever text they produce is the model thinking
  aloud: it reaches the client as reasoning, so the answer is the JSON alone;
- when a round ends without a tool call, the model has decided to answer: Ghost makes one more
  call, the answering call, with the same messages, no tools and the `response_format`. Its reply
  is the answer.

That costs one more upstream call on turns that ask for a format, and none on others. A call that
offers no tools at all (a `-plain` model, `/api/generate`), or a turn whose `tool_choice` is
"none", is sent the format on its one call as the client gave it.
"""

from __future__ import annotations

from typing import Any


class AnswerFormat:
    """One turn's format state: whether the next call drafts (tools, no format) or answers."""

    def __init__(self, sampling: dict[str, Any], *, agent: bool) -> None:
        requested = sampling.get("response_format")
        kind = requested.get("type") if isinstance(requested, dict) else None
        self.split = agent and requested is not None and kind != "text"
        self.answering = False

    def drafting(self, tools: list[dict[str, Any]]) -> bool:
        """Whether a call offering `tools` is a draft: sent without the format, its text reasoning."""
        return self.split and not self.answering and bool(tools)

    def answer_next(self) -> None:
        """The draft round ended without a tool call: the next call answers, constrained, without tools."""
        self.answering = True


def without_format(payload: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in payload.items() if key != "response_format"}
