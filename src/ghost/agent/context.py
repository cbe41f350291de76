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

The decisions are pure functions over sizes (ghost.agent.context_plan), the work they ask for is
done by small steps (ghost.agent.context_steps), and what every turn shares (the learned window,
the summaries) is changed only through ghost.agent.context_services. The turn makes the upstream
call itself with what `ContextFitter.fit` chose (`fitted`), and tells the fitter what the upstream
said about it (`learn_usage`, `learn_overflow`).

Prompt caches (llama.cpp, vLLM) reuse the longest unchanged prefix of a prompt, so everything the
fitter changes stays changed for the rest of the turn (a result shortened once is sent shortened
from then on, identically), and a summary is replaced only when the conversation outgrows it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ghost.agent import context_steps as steps
from ghost.agent.context_plan import Layout, Limits, plan_fold, plan_shorten
from ghost.agent.context_plan import TooBig, budget as plan_budget, reply_tokens, too_big, tools_budget
from ghost.agent.context_services import ContextServices
from ghost.agent.message_keys import chain_step
from ghost.agent.summary import Summary, summary_message
from ghost.agent.tokens import CHARS_PER_TOKEN, message_key
from ghost.agent.tool_offer import Offer, ToolChooser
from ghost.errors import ContextLengthExceeded
from ghost.events import ToolActivity, Usage
from ghost.llm.overflow import overflow_message
from ghost.llm.upstream import Upstream
from ghost.store.summaries import StoredSummary

log = logging.getLogger("ghost.context")


@dataclass(frozen=True)
class Fitted:
    """One call as fitted: what to send, and what fitting it cost."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]  # the tool schemas offered (compacted or chosen to fit)
    raw_tokens: int  # the prompt as counted, for calibration against what the upstream reports
    summary_usage: tuple[Usage | None, ...] = ()  # of each summary call made to fit it


@dataclass(frozen=True)
class _Folded:
    end: int  # body positions before this are folded (the newest user message excepted)
    stored: StoredSummary
    message: dict[str, Any]
    key: bytes


def tools_json(tools: list[dict[str, Any]]) -> str:
    return json.dumps(tools, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


class ContextFitter:
    """One turn's view of the conversation as sent upstream; lives as long as the turn."""

    def __init__(self, upstream: Upstream, services: ContextServices, *, model: str, session_id: str | None,
                 request_id: str, chooser: ToolChooser | None = None, window_cap: int | None = None) -> None:
        self.upstream, self.services, self.model = upstream, services, model
        self.window_cap = window_cap  # the client's own window for this turn (Ollama's num_ctx), if smaller
        assert services.schema_tokens is not None
        self.chooser = chooser or ToolChooser(services.schema_tokens)
        self.session_id, self.request_id = session_id, request_id
        self.counter = services.counter
        settings = services.settings
        self.limits = Limits(settings.context_reply_reserve, settings.context_safety_margin,
                             settings.context_tools_share, settings.context_tool_result_keep_chars,
                             settings.context_summary_max_tokens, settings.context_fold_target)
        self.fitted: Fitted | None = None  # the latest call, as `fit` left it
        # This turn's memos, by content hash: a message's tokens as first counted this turn (a
        # shortened tool result's: its copy's), and the copy sent in its place.
        self._tokens: dict[bytes, int] = {}
        self.shortened: dict[bytes, tuple[dict[str, Any], bytes]] = {}
        self.folded: _Folded | None = None
        self._known: list[tuple[dict[str, Any], bytes]] = []  # (message, its key) by position
        self._chain_memo: list[bytes] = [b""]
        self._carried_chain: list[bytes] = [b""]  # the body's plain chain as earlier turns left it

    # --- what the turn asks ------------------------------------------------------------------
    @property
    def window_tokens(self) -> int:
        """The window this turn fits into: the upstream's, or the client's when it asked for less."""
        tokens = self.services.window.tokens
        return min(tokens, self.window_cap) if self.window_cap else tokens

    @property
    def chat_extra(self) -> dict[str, Any]:
        """What every call to this upstream carries besides the chat (Ollama's `num_ctx`)."""
        return self.services.window.chat_extra

    def reply_tokens(self, payload: dict[str, Any]) -> int:
        asked = payload.get("max_tokens") or payload.get("max_completion_tokens")
        return reply_tokens(self.window_tokens, asked, self.limits.reply_reserve)

    def learn_usage(self, prompt_tokens: int) -> None:
        """The upstream counted the fitted call as `prompt_tokens`."""
        if self.fitted is not None:
            self.counter.learn(self.fitted.raw_tokens, prompt_tokens)

    def learn_overflow(self, exc: ContextLengthExceeded) -> None:
        """The upstream refused the fitted call: its window and its count, when it said them."""
        if exc.allowed:
            self.services.learn_window(exc.allowed)
        if exc.needed and self.fitted is not None:
            self.counter.learn(self.fitted.raw_tokens, exc.needed)

    def final(self, exc: ContextLengthExceeded) -> ContextLengthExceeded:
        """The error for a call the upstream refused even after compacting harder."""
        allowed = exc.allowed or self.window_tokens
        message = overflow_message(exc.needed, allowed, "even after compacting, the conversation")
        return ContextLengthExceeded(message, needed=exc.needed, allowed=allowed)

    async def prompt_tokens(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> int:
        """The tokens of this prompt as the first call would send it: the messages unshortened and
        the tool schemas as offered within their budget (compacted or chosen), calibrated."""
        view = _View(messages, self._keys(messages))
        await self._count(messages, view.keys)
        fixed_raw = self._raw(view.head, view.head_keys) + self._raw(*view.newest())
        budget = self._budget(self.reply_tokens({}), harder=False)
        offer = await self.chooser.choose(tools, messages, self._tools_budget(budget, fixed_raw))
        return self.counter.calibrated(self._raw(messages, view.keys) + offer.tokens)

    # --- fitting -------------------------------------------------------------------------------
    async def fit(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], reply: int, *,
                  harder: bool) -> AsyncIterator[ToolActivity]:
        """Choose what to send (`fitted`), compacting as needed; the events say what was done."""
        self.fitted = None
        view = _View(messages, self._keys(messages))
        await self._count(messages, view.keys)
        budget = self._budget(reply, harder)
        head_raw, newest_raw = self._raw(view.head, view.head_keys), self._raw(*view.newest())
        if (big := too_big(head_raw, newest_raw, self.counter.factor, budget, reply)) is not None:
            raise self._too_big(big)
        offer = await self._offer(tools, messages, self._tools_budget(budget, head_raw + newest_raw))
        layout = self._layout(view, head_raw, offer.tokens, budget)
        summary_usage: list[Usage | None] = []
        if not layout.fits():
            layout, paths = await self._shorten(view, layout, harder)
            if paths:
                yield steps.shortened_activity(paths)
        if not layout.fits():
            layout = await self._reuse(view, layout)
        if not layout.fits():
            async for activity in self._fold(view, layout, summary_usage):
                yield activity
            if self.folded is not None:
                layout = layout.with_fold(self.folded.end, self._tokens[self.folded.key])
        if not layout.fits():
            raise self._history_too_big(layout, reply)
        self.fitted = Fitted(self._compose(view), offer.tools, layout.sent(), tuple(summary_usage))

    def _budget(self, reply: int, harder: bool) -> int:
        return plan_budget(self.window_tokens, reply, self.limits.safety_margin, harder=harder)

    def _tools_budget(self, budget: int, fixed_raw: int) -> int:
        return tools_budget(self.window_tokens, self.limits.tools_share, budget, fixed_raw, self.counter.factor)

    async def _offer(self, tools: list[dict[str, Any]], messages: list[dict[str, Any]], budget: int) -> Offer:
        """The tool schemas this call offers within their budget (ghost.agent.tool_offer)."""
        offer = await self.chooser.choose(tools, messages, budget)
        self.services.offered(offer)
        if offer.left_out:
            log.info("tools: %d offered, %d left out to fit %d tokens (request %s)", len(offer.tools),
                     len(offer.left_out), offer.budget, self.request_id)
        return offer

    def _layout(self, view: "_View", head_raw: int, tools_raw: int, budget: int) -> Layout:
        folded = self.folded
        return Layout(head_raw, tuple(self._raw_one(m, k) for m, k in zip(view.body, view.body_keys)),
                      view.roles(), view.newest_at, tools_raw, self.counter.factor, budget,
                      folded.end if folded else 0, self._tokens[folded.key] if folded else 0)

    def _compose(self, view: "_View") -> list[dict[str, Any]]:
        """The messages as sent: the system messages, the summary, what is kept of the body (each
        shortened tool result as its copy)."""
        body = list(zip(view.body, view.body_keys))
        if self.folded is not None:
            end = self.folded.end
            early_user = [body[view.newest_at]] if 0 <= view.newest_at < end else []
            body = [(self.folded.message, self.folded.key), *early_user, *body[end:]]
        shortened = self.shortened
        return [*view.head, *(shortened[k][0] if k in shortened and m.get("role") == "tool" else m for m, k in body)]

    def _too_big(self, big: TooBig) -> ContextLengthExceeded:
        """The overflow error naming what does not fit: the system prompt or the newest message."""
        window = self.window_tokens
        if big.system_prompt_is_cause:
            what = f"the system prompt (about {big.head:,} tokens: Ghost's and the client's system messages)"
            advice = ("Shorten the client's system prompt (or its knowledge/memory inserts), or use a model "
                      "with a larger window (--context-window).")
        else:
            what = f"the newest message (about {big.newest:,} tokens)"
            advice = ("Shorten the message or send the text as a file (POST /api/upload) and ask about it, "
                      "or use a model with a larger window (--context-window).")
        if window < self.services.window.tokens:
            advice += f" The request's own num_ctx set this turn's window to {window:,} tokens."
        message = (f"{what} does not fit the model's context window (needs about {big.needed:,} tokens; the "
                   f"model's context window allows {window:,}; room for the answer included). The tools are "
                   f"not the cause: they are left out when there is no room. {advice}")
        return ContextLengthExceeded(message, needed=big.needed, allowed=window)

    def _history_too_big(self, layout: Layout, reply: int) -> ContextLengthExceeded:
        needed = layout.calibrated(layout.sent()) + reply
        message = overflow_message(needed, self.window_tokens, "the conversation history, even after shortening "
                                   "tool results and summarising earlier messages,")
        return ContextLengthExceeded(message, needed=needed, allowed=self.window_tokens)

    # --- counting, by content hash -------------------------------------------------------------
    def _keys(self, messages: list[dict[str, Any]]) -> list[bytes]:
        """Each message's content hash. The turn's list only grows, so a message found at the same
        position as on an earlier call is not hashed again; on the first call, the body's known
        beginning comes with the keys earlier turns gave it (ghost.agent.message_keys)."""
        if not self._known:
            self._known = self._carried(messages)
        known, keys = self._known, []
        for position, message in enumerate(messages):
            if position < len(known) and known[position][0] is message:
                keys.append(known[position][1])
                continue
            key = message_key(message)
            if position < len(known):
                known[position] = (message, key)
            else:
                known.append((message, key))
            keys.append(key)
        return keys

    def _carried(self, messages: list[dict[str, Any]]) -> list[tuple[dict[str, Any], bytes]]:
        """(message, key) of the system messages (hashed: Ghost's prompt is made anew each turn)
        and of the body's leading plain messages (carried from earlier turns where known)."""
        lead = _lead(messages)
        body = messages[lead:]
        keyed = self.services.carried.leading(body)
        self._carried_chain = keyed.chain
        return [*((m, message_key(m)) for m in messages[:lead]), *zip(body, keyed.keys)]

    async def _count(self, messages: list[dict[str, Any]], keys: list[bytes]) -> None:
        """Count the messages this turn has not seen yet (the shared cache knows most of them: those
        are taken from it in the same pass)."""
        tokens, cached, new = self._tokens, self.counter.cached, []
        for message, key in zip(messages, keys):
            if key not in tokens:
                if (count := cached(key)) is not None:
                    tokens[key] = count
                else:
                    new.append((key, message))
        if new:
            await self.counter.count_new(new)
            for key, message in new:
                self._raw_one(message, key)

    def _raw(self, messages: list[dict[str, Any]], keys: list[bytes]) -> int:
        """Tokens of these messages as counted (a shortened tool result's: its short copy's)."""
        return sum(self._raw_one(m, k) for m, k in zip(messages, keys))

    def _raw_one(self, message: dict[str, Any], key: bytes) -> int:
        tokens = self._tokens.get(key)
        if tokens is None:
            tokens = self.counter.cached(key)
            if tokens is None:  # not counted yet (only if the shared cache dropped it just now)
                tokens = math.ceil(len(str(message.get("content"))) / CHARS_PER_TOKEN)
            self._tokens[key] = tokens
        return tokens

    # --- 1. shorten tool results ---------------------------------------------------------------
    async def _shorten(self, view: "_View", layout: Layout, harder: bool) -> tuple[Layout, list[str | None]]:
        """Shorten the oldest tool results until the call fits; each one's saved path (None: not saved)."""
        if "tool" not in layout.roles:  # a chat without tool results (most): nothing to look at
            return layout, []
        plan = plan_shorten(layout, self._tool_chars(view), self.limits, harder=harder)
        paths: list[str | None] = []
        for position in plan.positions:
            if layout.fits():
                break
            message, key = view.body[position], view.body_keys[position]
            short, path = await steps.shorten(self.services, message, plan.keep)
            short_key = message_key(short)
            await self.counter.count_new([(short_key, short)])
            self.shortened[key] = (short, short_key)
            self._tokens[key] = self._raw_one(short, short_key)  # from now on it counts as its copy
            layout = layout.with_tokens(position, self._tokens[key])
            paths.append(path)
        return layout, paths

    def _tool_chars(self, view: "_View") -> list[int | None]:
        """Each body message's text length as sent, if it is a tool result with text."""
        chars: list[int | None] = []
        for message, key in zip(view.body, view.body_keys):
            content = self._as_sent(message, key).get("content") if message.get("role") == "tool" else None
            chars.append(len(content) if isinstance(content, str) else None)
        return chars

    def _as_sent(self, message: dict[str, Any], key: bytes) -> dict[str, Any]:
        return self.shortened[key][0] if key in self.shortened else message

    # --- 2. fold the earliest messages into a summary --------------------------------------------
    async def _reuse(self, view: "_View", layout: Layout) -> Layout:
        """Use a summary made on an earlier turn (the client resent the same history)."""
        chain = self._chain(view)
        by_hash = {chain[k].hex(): k for k in layout.fold_ends()}
        stored = await self.services.recent.longest(by_hash, self.services.summaries)
        if stored is None:
            return layout
        self.folded = await self._fold_into(by_hash[stored.prefix_hash], stored)
        await self.services.show_summary(self.session_id, stored)
        return layout.with_fold(self.folded.end, self._tokens[self.folded.key])

    async def _fold(self, view: "_View", layout: Layout, usage: list[Usage | None]) -> AsyncIterator[ToolActivity]:
        """Fold as planned into a summary the model writes; `usage` gets the summary call's."""
        fold = plan_fold(layout, self.limits)
        if fold is None:
            return
        covered = [self._as_sent(m, k) for m, k in view.covered(fold.start, fold.end)]
        yield steps.summarising_activity(len(covered))
        summary = await self._summarise(covered, layout.budget, fold.summary_tokens)
        usage.append(summary.usage if summary.written_by_model else None)
        stored = StoredSummary(self._chain(view)[fold.end].hex(), fold.covers, summary.text)
        self.folded = await self._fold_into(fold.end, stored)
        if summary.written_by_model:
            await self.services.keep_summary(stored, self.session_id)
        yield steps.summarised_activity(summary, len(covered))

    async def _summarise(self, covered: list[dict[str, Any]], budget: int, max_tokens: int) -> Summary:
        self.services.summary_started()
        previous = self.folded.stored.text if self.folded else None
        return await steps.write_summary(self.upstream, self.counter, model=self.model, previous=previous,
                                         messages=covered, room=budget, max_tokens=max_tokens,
                                         extra=self.services.window.chat_extra, request_id=self.request_id)

    async def _fold_into(self, end: int, stored: StoredSummary) -> _Folded:
        message = summary_message(stored.text, stored.covers)
        key = message_key(message)
        await self.counter.count_new([(key, message)])
        self._raw_one(message, key)
        return _Folded(end, stored, message, key)

    def _chain(self, view: "_View") -> list[bytes]:
        """chain[k]: the hash of the body's first k messages (the newest user message left out).
        Within a turn the body only grows, so the chain is extended, never recomputed."""
        chain = self._chain_memo
        if len(chain) == 1:  # up to the newest user message, the chain is the one carried (if any)
            carried = self._carried_chain
            chain.extend(carried[1:len(carried) if view.newest_at < 0 else view.newest_at + 1])
        for position in range(len(chain) - 1, len(view.body)):
            chain.append(chain[-1] if position == view.newest_at else chain_step(chain[-1], view.body_keys[position]))
        return chain


class _View:
    """The conversation's parts: leading system messages, the rest, and the newest user message."""

    def __init__(self, messages: list[dict[str, Any]], keys: list[bytes]) -> None:
        lead = _lead(messages)
        self.head, self.body, self.keys = messages[:lead], messages[lead:], keys
        self.head_keys, self.body_keys = keys[:lead], keys[lead:]
        users = [i for i, m in enumerate(self.body) if m.get("role") == "user"]
        self.newest_at = users[-1] if users else -1

    def newest(self) -> tuple[list[dict[str, Any]], list[bytes]]:
        """The newest user message (and its key), as lists: empty when there is none."""
        at = self.newest_at
        return ([self.body[at]], [self.body_keys[at]]) if at >= 0 else ([], [])

    def roles(self) -> tuple[Any, ...]:
        return tuple(m.get("role") for m in self.body)

    def covered(self, start: int, end: int) -> list[tuple[dict[str, Any], bytes]]:
        """The messages (and keys) of body positions [start, end), the newest user message left out."""
        return [(self.body[i], self.body_keys[i]) for i in range(start, end) if i != self.newest_at]


def _lead(messages: list[dict[str, Any]]) -> int:
    """How many system messages lead the conversation (Ghost's and the client's)."""
    lead = 0
    while lead < len(messages) and messages[lead].get("role") in ("system", "developer"):
        lead += 1
    return lead
