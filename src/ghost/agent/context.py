"""Keep every upstream call of a turn inside the model's context window.

Before each call the prompt (messages + tool schemas) must fit the window with room for the answer
(the request's `max_tokens`, else `--context-reply-reserve`) and a safety margin. When it does not:

1. older tool results are shortened to a head and a tail; the full text is saved in the sandbox
   (`.ghost/outputs/`, see ghost.agent.outputs) and the note in its place says how to read it back;
2. the earliest messages are folded into a summary the model writes itself (one extra call). It
   goes first after the system messages. Summaries are cached by the hash of the messages they
   cover, so a client that resends the whole history every turn reuses it; enough is folded at
   once (`--context-fold-target`) that one summary lasts many turns;
3. only if the system messages, the tools and the newest user message alone cannot fit: a 400
   `context_length_exceeded` saying how many tokens were needed and allowed.
The system messages, the tools and the newest user message are never dropped.

If the upstream still says the window was exceeded, the turn learns the real numbers, compacts
harder and retries once; then it gives up with the same 400 (in-band if the reply had started).

Prompt caches (llama.cpp, vLLM) reuse the longest unchanged prefix of a prompt, so everything the
fitter changes stays changed for the rest of the turn (a result shortened once is sent shortened
from then on, identically), and a summary is replaced only when the conversation outgrows it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

from ghost.agent.context_services import ContextServices
from ghost.agent.tool_offer import Offer, ToolChooser
from ghost.events import ToolActivity, Usage
from ghost.agent.summary import INSTRUCTION_TOKENS, Summary, excerpt, render, summarise, summary_message
from ghost.agent.tokens import CHARS_PER_TOKEN, message_key
from ghost.errors import ContextLengthExceeded
from ghost.llm.chat import Completion, Delta
from ghost.llm.overflow import overflow_message
from ghost.llm.upstream import Upstream
from ghost.store.summaries import StoredSummary

log = logging.getLogger("ghost.context")
HARDER = 0.8  # after an overflow the upstream reported: the budget shrinks by this much more
NOTE_TOKENS = 60  # the note that replaces a shortened result's middle


@dataclass(frozen=True)
class ExtraCall:
    """An upstream call Ghost made for itself (a summary): its usage counts in the turn's."""

    usage: Usage | None


@dataclass(frozen=True)
class _Folded:
    end: int  # body positions before this are folded (the newest user message excepted)
    stored: StoredSummary
    message: dict[str, Any]


def tools_json(tools: list[dict[str, Any]]) -> str:
    return json.dumps(tools, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _chain(previous: bytes, key: bytes) -> bytes:
    return hashlib.blake2b(previous + key, digest_size=16).digest()


class ContextFitter:
    """One turn's view of the conversation as sent upstream; lives as long as the turn."""

    def __init__(self, upstream: Upstream, services: ContextServices, *, model: str, session_id: str | None,
                 request_id: str, chooser: ToolChooser | None = None, window_cap: int | None = None) -> None:
        self.upstream, self.services, self.model = upstream, services, model
        self.window_cap = window_cap  # the client's own window for this turn (Ollama's num_ctx), if smaller
        assert services.schema_tokens is not None
        self.chooser = chooser or ToolChooser(services.schema_tokens)
        self.offered: list[dict[str, Any]] = []  # the tools of the call being fitted
        self.session_id, self.request_id = session_id, request_id
        self.counter = services.counter
        self.shortened: dict[bytes, dict[str, Any]] = {}  # original tool message's key -> its short copy
        self.folded: _Folded | None = None
        self._keys: dict[int, tuple[dict[str, Any], bytes]] = {}
        self._counts: dict[int, tuple[dict[str, Any], int]] = {}  # this turn's messages, by identity
        self._chain_memo: list[bytes] = [b""]
        self._fits_memo: tuple[_View, tuple[int, int], int] | None = None
        self._edits = 0  # tool results shortened (or shortened again) this turn
        self.raw_sent = 0

    # --- one upstream call, fitted, with one retry on an overflow --------------------------------
    async def stream(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]],
                     payload_for: Callable[[list[dict[str, Any]], list[dict[str, Any]]], dict[str, Any]],
                     ) -> AsyncIterator[Delta | Completion | ToolActivity | ExtraCall]:
        for attempt in range(2):
            reply = self._reply_tokens(payload_for([], tools))  # the window may have been learned anew
            sent: list[dict[str, Any]] = []
            async for item in self._fit(messages, tools, reply, sent, harder=attempt > 0):
                yield item
            payload = {**self.services.window.chat_extra, **payload_for(sent, self.offered)}
            started = False
            try:
                async for item in self.upstream.stream_chat(payload, self.request_id):
                    started = True
                    if isinstance(item, Completion) and item.usage is not None:
                        self.counter.learn(self.raw_sent, item.usage.prompt_tokens)
                    yield item
                return
            except ContextLengthExceeded as exc:
                if started or attempt:
                    raise self._final(exc) from exc
                self._learn_overflow(exc)

    async def prompt_tokens(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> int:
        """The tokens of this prompt as the first call would send it: the messages unshortened and
        the tool schemas as offered within their budget (compacted or chosen), calibrated."""
        await self._count(messages)
        view = _View(messages)
        fixed_raw = self._raw(view.head) + self._raw([view.newest_user] if view.newest_user else [])
        budget = self._budget(self._reply_tokens({}), harder=False)
        offer = await self.chooser.choose(tools, messages, self._tools_budget(budget, fixed_raw))
        return self.counter.calibrated(self._raw(messages) + offer.tokens)

    @property
    def window_tokens(self) -> int:
        """The window this turn fits into: the upstream's, or the client's when it asked for less."""
        tokens = self.services.window.tokens
        return min(tokens, self.window_cap) if self.window_cap else tokens

    def _reply_tokens(self, payload: dict[str, Any]) -> int:
        window = self.window_tokens
        asked = payload.get("max_tokens") or payload.get("max_completion_tokens")
        if isinstance(asked, int) and asked > 0:
            return min(asked, window // 2)
        return min(self.services.settings.context_reply_reserve, window // 8)

    def _budget(self, reply: int, harder: bool) -> int:
        window = self.window_tokens
        budget = window - reply - math.ceil(window * self.services.settings.context_safety_margin)
        return int(budget * HARDER) if harder else budget

    def _learn_overflow(self, exc: ContextLengthExceeded) -> None:
        window = self.services.window
        if exc.allowed and exc.allowed < window.tokens:
            log.warning("the upstream says its context window is %d tokens, not %d; using that",
                        exc.allowed, window.tokens)
            self.services.window = replace(window, tokens=exc.allowed, source="the upstream's overflow error")
        if exc.needed:
            self.counter.learn(self.raw_sent, exc.needed)

    def _final(self, exc: ContextLengthExceeded) -> ContextLengthExceeded:
        allowed = exc.allowed or self.window_tokens
        message = overflow_message(exc.needed, allowed, "even after compacting, the conversation")
        return ContextLengthExceeded(message, needed=exc.needed, allowed=allowed)

    # --- fitting -------------------------------------------------------------------------------
    async def _fit(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], reply: int,
                   sent: list[dict[str, Any]], *, harder: bool) -> AsyncIterator[ToolActivity | ExtraCall]:
        """Fill `sent` with the messages to send, compacting as needed (events say what was done)."""
        view = _View(messages)
        await self._count(messages)
        budget = self._budget(reply, harder)
        newest = [view.newest_user] if view.newest_user else []
        head_raw, newest_raw = self._raw(view.head), self._raw(newest)
        if self.counter.calibrated(head_raw + newest_raw) > budget:
            raise self._too_big(head_raw, newest_raw, reply)
        offer = await self.chooser.choose(tools, messages, self._tools_budget(budget, head_raw + newest_raw))
        self._offer(offer)
        tools_raw = offer.tokens
        if not self._fits(view, tools_raw, budget):
            async for event in self._shorten(view, tools_raw, budget, harder):
                yield event
        if not self._fits(view, tools_raw, budget):
            await self._adopt_cached(view)
        if not self._fits(view, tools_raw, budget):
            async for item in self._fold(view, tools_raw, budget):
                yield item
        if not self._fits(view, tools_raw, budget):
            needed = self.counter.calibrated(self.raw_sent) + reply
            raise ContextLengthExceeded(overflow_message(needed, self.window_tokens,
                                                         "the conversation history, even after shortening tool results and summarising earlier "
                                                         "messages,"),
                                        needed=needed, allowed=self.window_tokens)
        sent.extend(self._compose(view))

    def _tools_budget(self, budget: int, fixed_raw: int) -> int:
        """Raw tokens the tool schemas may take: their share of the window, at most the room the
        system prompt and the newest message leave (the message is never refused for the tools)."""
        share = int(self.window_tokens * self.services.settings.context_tools_share)
        room = budget - self.counter.calibrated(fixed_raw)
        return max(0, int(min(share, room) / max(self.counter.factor, 1e-6)))

    def _offer(self, offer: Offer) -> None:
        self.offered = offer.tools
        self.services.last_tools = offer.report()
        if offer.left_out:
            log.info("tools: %d offered, %d left out to fit %d tokens (request %s)", len(offer.tools),
                     len(offer.left_out), offer.budget, self.request_id)

    def _too_big(self, head_raw: int, newest_raw: int, reply: int) -> ContextLengthExceeded:
        """The overflow error naming what does not fit: the system prompt or the newest message."""
        window = self.window_tokens
        needed = self.counter.calibrated(head_raw + newest_raw) + reply
        head, newest = self.counter.calibrated(head_raw), self.counter.calibrated(newest_raw)
        if head >= newest:
            what = f"the system prompt (about {head:,} tokens: Ghost's and the client's system messages)"
            advice = ("Shorten the client's system prompt (or its knowledge/memory inserts), or use a model "
                      "with a larger window (--context-window).")
        else:
            what = f"the newest message (about {newest:,} tokens)"
            advice = ("Shorten the message or send the text as a file (POST /api/upload) and ask about it, "
                      "or use a model with a larger window (--context-window).")
        if window < self.services.window.tokens:
            advice += f" The request's own num_ctx set this turn's window to {window:,} tokens."
        message = (f"{what} does not fit the model's context window (needs about {needed:,} tokens; the "
                   f"model's context window allows {window:,}; room for the answer included). The tools are "
                   f"not the cause: they are left out when there is no room. {advice}")
        return ContextLengthExceeded(message, needed=needed, allowed=window)

    def _fits(self, view: "_View", tools_raw: int, budget: int) -> bool:
        state = (self._edits, self.folded.end if self.folded else 0)
        memo = self._fits_memo  # only shortening or folding changes the total of one view
        if memo is None or memo[0] is not view or memo[1] != state:
            memo = self._fits_memo = (view, state, self._raw(view.head) + self._raw(self._kept(view)))
        self.raw_sent = memo[2] + tools_raw
        return self.counter.calibrated(self.raw_sent) <= budget

    def _kept(self, view: "_View") -> list[dict[str, Any]]:
        """The body as sent, before shortened tool results are swapped in."""
        if self.folded is None:
            return view.body
        end = self.folded.end
        early_user = [view.newest_user] if view.newest_user is not None and view.newest_at < end else []
        return [self.folded.message, *early_user, *view.body[end:]]

    def _compose(self, view: "_View") -> list[dict[str, Any]]:
        kept = self._kept(view)
        return [*view.head, *(self.shortened.get(self._key(m), m) if m.get("role") == "tool" else m for m in kept)]

    async def _count(self, messages: list[dict[str, Any]]) -> None:
        """Count the messages this turn has not seen yet (the shared cache knows most of them)."""
        new = [m for m in messages if (seen := self._counts.get(id(m))) is None or seen[0] is not m]
        if new:
            await self.counter.count_new([(self._key(m), m) for m in new])
            self._raw(new)

    def _key(self, message: dict[str, Any]) -> bytes:
        found = self._keys.get(id(message))
        if found is not None and found[0] is message:
            return found[1]
        key = message_key(message)
        self._keys[id(message)] = (message, key)  # the reference keeps the id from being reused
        return key

    def _raw(self, messages: list[dict[str, Any]]) -> int:
        """Tokens of these messages as counted (a shortened tool result's: its short copy's)."""
        total = 0
        for message in messages:
            count = self._counts.get(id(message))
            if count is None or count[0] is not message:
                tokens = self.counter.cached(self._key(message))
                if tokens is None:  # not counted yet (only if the shared cache dropped it just now)
                    tokens = math.ceil(len(str(message.get("content"))) / CHARS_PER_TOKEN)
                count = self._counts[id(message)] = (message, tokens)
            total += count[1]
        return total

    # --- 1. shorten tool results ---------------------------------------------------------------
    async def _shorten(self, view: "_View", tools_raw: int, budget: int, harder: bool) -> AsyncIterator[ToolActivity]:
        room = self._room(view, tools_raw, budget)
        keep = min(self.services.settings.context_tool_result_keep_chars, int(room * CHARS_PER_TOKEN / 4))
        keep = keep // 4 if harder else keep
        done: list[str] = []
        start = self.folded.end if self.folded else 0
        for message in view.body[start:]:
            if message.get("role") != "tool":
                continue
            current = self.shortened.get(self._key(message), message)
            if not isinstance(current.get("content"), str) or len(current["content"]) <= keep + NOTE_TOKENS * CHARS_PER_TOKEN:
                continue
            if self._fits(view, tools_raw, budget):
                break
            path = await self._shorten_one(message, keep)
            done.append(path or "")
        if done:
            saved = sorted({p for p in done if p})
            where = f" (full text in {', '.join(saved[:3])}{'…' if len(saved) > 3 else ''})" if saved else ""
            yield ToolActivity("context", "end", f"← shortened {len(done)} tool result"
                               f"{'s' if len(done) > 1 else ''} to fit the context window{where}",
                               compaction="tool_results")

    async def _shorten_one(self, message: dict[str, Any], keep: int) -> str | None:
        text = message["content"]
        path = await self.services.saved_path(text)
        head, tail = text[: keep * 2 // 3], text[len(text) - keep // 3:]
        if path:
            note = (f"[… {len(text) - len(head) - len(tail):,} of {len(text):,} characters left out to fit the "
                    f"context window. The full result is saved in the sandbox: read it with "
                    f"read_file(path=\"{path}\") …]")
        else:
            note = f"[… {len(text) - len(head) - len(tail):,} characters left out to fit the context window …]"
        short = {**message, "content": f"{head}\n{note}\n{tail}"}
        self.shortened[self._key(message)] = short
        self._edits += 1
        await self.counter.count_new([(self._key(short), short)])
        self._counts[id(message)] = (message, self._raw([short]))  # from now on it counts as its copy
        return path

    # --- 2. fold the earliest messages into a summary --------------------------------------------
    async def _adopt_cached(self, view: "_View") -> None:
        """Use a summary made on an earlier turn (the client resent the same history)."""
        ends = [k for k in view.fold_ends() if self.folded is None or k > self.folded.end]
        chain = self._chain(view)
        by_hash = {chain[k].hex(): k for k in ends}
        stored = await self.services.recent.longest(by_hash, self.services.summaries)
        if stored is None:
            return
        self.folded = self._folded(by_hash[stored.prefix_hash], stored)
        await self.counter.count_new([(self._key(self.folded.message), self.folded.message)])
        if self.session_id and self.services.in_use.get(self.session_id) != stored.prefix_hash:
            self.services.in_use[self.session_id] = stored.prefix_hash
            await self.services.summaries.use(self.session_id, stored)

    async def _fold(self, view: "_View", tools_raw: int, budget: int) -> AsyncIterator[ToolActivity | ExtraCall]:
        ends = [k for k in view.fold_ends() if self.folded is None or k > self.folded.end]
        if not ends:
            return
        end = self._fold_end(view, ends, tools_raw, budget)
        start = self.folded.end if self.folded else 0
        covered = view.covered(start, end)
        yield ToolActivity("context", "start", f"→ summarising {len(covered)} earlier messages to fit the context window")
        summary = await self._summarise(covered, budget, self._summary_tokens(view, tools_raw, budget))
        yield ExtraCall(summary.usage) if summary.written_by_model else ExtraCall(None)
        count = len(view.covered(0, end))
        stored = StoredSummary(self._chain(view)[end].hex(), count, summary.text)
        self.folded = self._folded(end, stored)
        await self.counter.count_new([(self._key(self.folded.message), self.folded.message)])
        if summary.written_by_model:
            await self._store(stored)
        verb = "summarised" if summary.written_by_model else "could not summarise (kept excerpts of)"
        yield ToolActivity("context", "end", f"← {verb} {len(covered)} earlier messages", compaction="summary")

    def _fold_end(self, view: "_View", ends: list[int], tools_raw: int, budget: int) -> int:
        """The least folding that leaves the rest within the fold target (else the most possible)."""
        fixed = self._raw(view.head) + tools_raw + self._summary_tokens(view, tools_raw, budget)
        sizes = [self._raw([m]) for m in view.body]
        after = [0] * (len(sizes) + 1)  # after[k]: tokens of body[k:]
        for position in range(len(sizes) - 1, -1, -1):
            after[position] = after[position + 1] + sizes[position]
        newest = max(view.newest_at, 0)
        # The history left unfolded may fill `--context-fold-target` of the room that this turn's
        # own messages leave: they leave with the turn, the history stays and grows.
        free = budget - self.counter.calibrated(fixed + after[newest])
        target = free * self.services.settings.context_fold_target
        for end in ends:
            if end <= newest and self.counter.calibrated(after[end] - after[newest]) <= target:
                return end
            early_user = sizes[view.newest_at] if 0 <= view.newest_at < end else 0
            if end > newest and self.counter.calibrated(fixed + early_user + after[end]) <= budget:
                return end
        return ends[-1]

    def _room(self, view: "_View", tools_raw: int, budget: int) -> int:
        """Tokens left for the conversation once the system messages and the tools are in."""
        return max(budget - self.counter.calibrated(self._raw(view.head) + tools_raw), 0)

    def _summary_tokens(self, view: "_View", tools_raw: int, budget: int) -> int:
        room = self._room(view, tools_raw, budget)
        return min(self.services.settings.context_summary_max_tokens, max(room // 6, 32))

    async def _summarise(self, covered: list[dict[str, Any]], budget: int, max_tokens: int) -> Summary:
        self.services.summary_calls += 1
        messages = [self.shortened.get(self._key(m), m) for m in covered]
        previous = self.folded.stored.text if self.folded else None
        prompt = await self._summary_prompt(previous, messages, budget - max_tokens - INSTRUCTION_TOKENS)
        fallback = excerpt(previous, messages, int(max_tokens * CHARS_PER_TOKEN))
        return await summarise(self.upstream, model=self.model, prompt=prompt, fallback=fallback,
                               max_tokens=max_tokens, extra=self.services.window.chat_extra,
                               request_id=self.request_id)

    async def _summary_prompt(self, previous: str | None, messages: list[dict[str, Any]], room: int) -> str:
        """The messages rendered for the summary call, cut until they fit `room` tokens (as counted)."""
        chars = int(room * CHARS_PER_TOKEN)
        for _ in range(4):
            prompt = render(previous, messages, chars)
            tokens = self.counter.calibrated(await self.counter.count_text(message_key({"summary": prompt}), prompt))
            if tokens <= room:
                break
            chars = int(chars * room / tokens * 0.9)
        return prompt

    def _folded(self, end: int, stored: StoredSummary) -> _Folded:
        return _Folded(end, stored, summary_message(stored.text, stored.covers))

    async def _store(self, stored: StoredSummary) -> None:
        self.services.recent.remember(stored)
        if self.session_id:
            self.services.in_use[self.session_id] = stored.prefix_hash
        await self.services.summaries.put(stored, self.session_id or "")

    def _chain(self, view: "_View") -> list[bytes]:
        """chain[k]: the hash of the body's first k messages (the newest user message left out).
        Within a turn the body only grows, so the chain is extended, never recomputed."""
        chain = self._chain_memo
        for position in range(len(chain) - 1, len(view.body)):
            message = view.body[position]
            chain.append(chain[-1] if position == view.newest_at else _chain(chain[-1], self._key(message)))
        return chain


class _View:
    """The conversation's parts: leading system messages, the rest, and the newest user message."""

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        lead = 0
        while lead < len(messages) and messages[lead].get("role") in ("system", "developer"):
            lead += 1
        self.head, self.body = messages[:lead], messages[lead:]
        users = [i for i, m in enumerate(self.body) if m.get("role") == "user"]
        self.newest_at = users[-1] if users else -1
        self.newest_user = self.body[self.newest_at] if users else None

    def fold_ends(self) -> list[int]:
        """Where a fold may end: before a message that is not a tool result (a call and its results
        stay together), and never into the last exchange (the model needs what it just did)."""
        last = len(self.body) - 1
        while last > 0 and self.body[last].get("role") == "tool":
            last -= 1
        return [k for k in range(1, last + 1) if self.body[k].get("role") != "tool"]

    def covered(self, start: int, end: int) -> list[dict[str, Any]]:
        return [m for i, m in enumerate(self.body[start:end], start) if i != self.newest_at]

