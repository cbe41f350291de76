"""What every turn's context fitter shares, built once at start: the learned window, the token
counter, the summary store and the small in-process memos that keep a turn from touching SQLite or
the disk when nothing changed (see ghost.agent.context).

A turn's fitter changes this shared state only through the methods below (the window it learned
from an overflow, the tools it offered, the summaries it made and showed); the calibration is the
`TokenCounter`'s own (`learn`)."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ghost.agent.message_keys import CarriedKeys
from ghost.agent.outputs import output_name, save_output
from ghost.agent.tokens import TokenCounter
from ghost.agent.tool_offer import Offer, SchemaTokens
from ghost.config import Settings
from ghost.llm.window import UpstreamWindow, learn_window
from ghost.llm.upstream import HttpUpstream
from ghost.store.db import Database
from ghost.store.summaries import StoredSummary, Summaries

log = logging.getLogger("ghost.context")
SAVED_MEMO = 1024


@dataclass
class ContextServices:
    """What every turn's fitter shares: built once at start (`start_context`)."""

    window: UpstreamWindow
    counter: TokenCounter
    summaries: Summaries
    sandbox_root: Path
    settings: Settings
    recent: "RecentSummaries" = field(default_factory=lambda: RecentSummaries())
    summary_calls: int = 0  # for the benchmark and the logs
    # Tool results saved by this process (file name -> path): the same result shortened again on a
    # later turn is not written (or read back to compare) again. Cleared by a workspace load.
    saved: OrderedDict[str, str] = field(default_factory=OrderedDict)
    in_use: dict[str, str] = field(default_factory=dict)  # session -> hash of the summary it shows
    schema_tokens: SchemaTokens | None = None  # the tool schemas' counts, by content (set in __post_init__)
    last_tools: dict[str, Any] | None = None  # what the last turn's last call offered and left out
    # The messages' keys and chain steps earlier turns computed, by conversation: one per workspace.
    carried: CarriedKeys = field(default_factory=CarriedKeys)

    def __post_init__(self) -> None:
        if self.schema_tokens is None:
            self.schema_tokens = SchemaTokens(self.counter, bundled=self.window.flavour == "bundled")

    async def saved_path(self, text: str) -> str | None:
        name = output_name(text)
        if (path := self.saved.get(name)) is not None:
            return path
        path = await asyncio.to_thread(save_output, self.sandbox_root, text)
        if path is not None:
            self.saved[name] = path
            if len(self.saved) > SAVED_MEMO:
                self.saved.popitem(last=False)
        return path

    def learn_window(self, allowed: int) -> None:
        """The upstream said (in an overflow error) that its window is `allowed` tokens."""
        if allowed and allowed < self.window.tokens:
            log.warning("the upstream says its context window is %d tokens, not %d; using that",
                        allowed, self.window.tokens)
            self.window = replace(self.window, tokens=allowed, source="the upstream's overflow error")

    def offered(self, offer: Offer) -> None:
        """What the latest call offered of the tools, for /api/health."""
        self.last_tools = offer.report()

    def summary_started(self) -> None:
        self.summary_calls += 1

    async def show_summary(self, session_id: str | None, stored: StoredSummary) -> None:
        """A summary found again (the client resent the history) is the one `session_id` shows."""
        if session_id and self.in_use.get(session_id) != stored.prefix_hash:
            self.in_use[session_id] = stored.prefix_hash
            await self.summaries.use(session_id, stored)

    async def keep_summary(self, stored: StoredSummary, session_id: str | None) -> None:
        """A summary the model wrote: kept in memory and in the store (shown by `session_id`)."""
        self.recent.remember(stored)
        if session_id:
            self.in_use[session_id] = stored.prefix_hash
        await self.summaries.put(stored, session_id or "")

    async def forget_saved(self) -> None:
        self.saved.clear()

    def for_workspace(self, summaries: Summaries, sandbox_root: Path) -> "ContextServices":
        """The same learned window and counter over another user's summaries and sandbox, with
        memos of its own (a memo of one user's saved outputs must not answer another's)."""
        return ContextServices(self.window, self.counter, summaries, sandbox_root, self.settings)

    def info(self) -> dict[str, Any]:
        """For /api/health: the window, where it came from, and how counting is going."""
        return {**self.window.as_info(), "summaries_made": self.summary_calls,
                "calibration": round(self.counter.factor, 3), "tools_share": self.settings.context_tools_share,
                "tools_last_turn": self.last_tools}


class RecentSummaries:
    """The summaries this process made or found lately, so a turn seldom has to ask SQLite."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._by_hash: OrderedDict[str, StoredSummary] = OrderedDict()

    def remember(self, stored: StoredSummary) -> None:
        self._by_hash[stored.prefix_hash] = stored
        self._by_hash.move_to_end(stored.prefix_hash)
        if len(self._by_hash) > self.size:
            self._by_hash.popitem(last=False)

    async def longest(self, by_hash: dict[str, int], store: Summaries) -> StoredSummary | None:
        """The summary covering the most of these prefixes: from memory, else from the store."""
        known = [self._by_hash[h] for h in by_hash if h in self._by_hash]
        if known:
            return max(known, key=lambda s: s.covers)
        stored = await store.longest(list(by_hash))
        if stored is not None:
            self.remember(stored)
        return stored


async def start_context(settings: Settings, upstream: HttpUpstream, db: Database, sandbox_root: Path,
                        bundled_size: int | None) -> ContextServices:
    """Learn the window and set up counting; call once the upstream and its models are known.
    `bundled_size`: the bundled model's context size when it is the upstream (nothing to ask)."""
    model = upstream.upstream_model(upstream.default_model)
    endpoint = upstream.endpoint
    window = await learn_window(upstream.http, endpoint, model, settings, bundled_size)
    tokenize_url = endpoint.at(window.tokenize_path) if window.tokenize_path else ""
    counter = TokenCounter(upstream.http, tokenize_url, endpoint.headers())
    return ContextServices(window, counter, Summaries(db), sandbox_root, settings)
