"""The steps that carry out a context plan (ghost.agent.context_plan): shorten a tool result (its
full text saved in the sandbox), write a summary with the upstream, and the activity events that
say what was done. Each step is one function; the fitter (ghost.agent.context) calls them in order.
"""

from __future__ import annotations

from typing import Any

from ghost.agent.context_services import ContextServices
from ghost.agent.summary import INSTRUCTION_TOKENS, Summary, excerpt, render, summarise
from ghost.agent.tokens import CHARS_PER_TOKEN, TokenCounter, message_key
from ghost.events import ToolActivity
from ghost.llm.upstream import Upstream

SUMMARY_PROMPT_TRIES = 4


def shortened_text(text: str, keep: int, path: str | None) -> str:
    """A head and a tail of `text` (`keep` characters in all) around a note on what was left out."""
    head, tail = text[: keep * 2 // 3], text[len(text) - keep // 3:]
    left_out = len(text) - len(head) - len(tail)
    if path:
        note = (f"[… {left_out:,} of {len(text):,} characters left out to fit the context window. The full "
                f"result is saved in the sandbox: read it with read_file(path=\"{path}\") …]")
    else:
        note = f"[… {left_out:,} characters left out to fit the context window …]"
    return f"{head}\n{note}\n{tail}"


async def shorten(services: ContextServices, message: dict[str, Any], keep: int) -> tuple[dict[str, Any], str | None]:
    """The tool result as sent from now on, and where its full text is saved (None: not saved)."""
    text = message["content"]
    path = await services.saved_path(text)
    return {**message, "content": shortened_text(text, keep, path)}, path


def shortened_activity(paths: list[str | None]) -> ToolActivity:
    saved = sorted({p for p in paths if p})
    where = f" (full text in {', '.join(saved[:3])}{'…' if len(saved) > 3 else ''})" if saved else ""
    return ToolActivity("context", "end", f"← shortened {len(paths)} tool result"
                        f"{'s' if len(paths) > 1 else ''} to fit the context window{where}", compaction="tool_results")


def summarising_activity(count: int) -> ToolActivity:
    return ToolActivity("context", "start", f"→ summarising {count} earlier messages to fit the context window")


def summarised_activity(summary: Summary, count: int) -> ToolActivity:
    verb = "summarised" if summary.written_by_model else "could not summarise (kept excerpts of)"
    return ToolActivity("context", "end", f"← {verb} {count} earlier messages", compaction="summary")


async def write_summary(upstream: Upstream, counter: TokenCounter, *, model: str, previous: str | None,
                        messages: list[dict[str, Any]], room: int, max_tokens: int, extra: dict[str, Any],
                        request_id: str) -> Summary:
    """The upstream's summary of `messages` (after the `previous` one), its prompt within `room`
    tokens; an excerpt stands in if the call fails (see ghost.agent.summary)."""
    prompt = await _summary_prompt(counter, previous, messages, room - max_tokens - INSTRUCTION_TOKENS)
    fallback = excerpt(previous, messages, int(max_tokens * CHARS_PER_TOKEN))
    return await summarise(upstream, model=model, prompt=prompt, fallback=fallback, max_tokens=max_tokens,
                           extra=extra, request_id=request_id)


async def _summary_prompt(counter: TokenCounter, previous: str | None, messages: list[dict[str, Any]],
                          room: int) -> str:
    """The messages rendered for the summary call, cut until they fit `room` tokens (as counted)."""
    chars = int(room * CHARS_PER_TOKEN)
    for _ in range(SUMMARY_PROMPT_TRIES):
        prompt = render(previous, messages, chars)
        tokens = counter.calibrated(await counter.count_text(message_key({"summary": prompt}), prompt))
        if tokens <= room:
            break
        chars = int(chars * room / tokens * 0.9)
    return prompt
