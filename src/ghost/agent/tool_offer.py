"""Which tool schemas go upstream on each call: a tool catalogue of any size fits any window.

Every schema sent — Ghost's own tools, acquired skills, MCP tools, the client's tools — costs
prompt tokens. The tool set has its own budget (`--context-tools-share` of the window, never more
than the room the system prompt and the newest message leave). Over it, Ghost chooses instead of
failing:

1. the schemas are compacted: descriptions of parameters, examples, titles and defaults go; names,
   types, `required`, enums and nesting stay, and a tool's own description keeps its first sentence;
2. if that is still too much, the tools most relevant to this call are sent — those `find_tools`
   picked, `delete_skill` (the way out of a skill flood), those the conversation has used, then
   those whose names and descriptions share the most words with the newest messages; at equal
   relevance the catalogue's order decides (Ghost's own first, acquired skills most recently used
   first, then MCP's, then the client's) — plus `find_tools`, which searches the rest and makes
   its picks callable from the next round.

A tool left out stays callable: a call to one of Ghost's still runs, a call to one of the client's
still goes back to the client. Token counts are cached by content (the catalogue rarely changes)
behind a memo by object identity (the registry hands the same parameter objects every round), so
a round costs a lookup per tool, not a count.
"""

from __future__ import annotations

import hashlib
import json
import marshal
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ghost.agent.tokens import TokenCounter, estimate
from ghost.llm.toolcalls import INSTRUCTIONS as TOOLS_PROMPT, first_sentence, tool_line

FIND_TOOLS = "find_tools"
PINNED = ("delete_skill",)  # always offered while it fits: a flood of skills must stay removable
FIND_RESULTS = 8  # tools one find_tools call returns and unlocks
FIND_RESULT_CHARS = 16_000  # the listed schemas of one find_tools result, at most
FIND_QUERY_CHARS = 2000
MEMO_ENTRIES = 4096
LISTS_MEMO = 64  # client tool lists remembered whole
CATALOGUES_MEMO = 32  # whole tool lists (Ghost's + the client's) with their counts
REPORT_NAMES = 50  # left-out tools /api/health lists by name
COMPACT_DESCRIPTION_CHARS = 160
_DROPPED_KEYS = frozenset({"description", "examples", "example", "title", "default", "$comment"})
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset("the and for with from that this what your you are can how not but all any its "
                  "into out use get set new one has have was were will would should could please "
                  "about there their them then than also just like make".split())

FIND_TOOLS_SCHEMA: dict[str, Any] = {"type": "function", "function": {
    "name": FIND_TOOLS,
    "description": "Search the tools not offered right now (only some fit the context window). "
                   "Returns the best matches with their parameters; call them from your next step.",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}


def tool_name(tool: dict[str, Any]) -> str:
    return str((tool.get("function") or {}).get("name", ""))


def words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if (len(w) > 2 or w.isdigit()) and w not in _STOP}


def compact_parameters(schema: Any) -> Any:
    """A JSON schema without what only a human needs: names, types, required and enums stay."""
    if isinstance(schema, list):
        return [compact_parameters(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: compact_parameters(spec) for name, spec in value.items()}  # names stay
        elif key not in _DROPPED_KEYS:
            out[key] = compact_parameters(value)
    return out


def compact_schema(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function") or {}
    description = first_sentence(str(function.get("description") or ""))[:COMPACT_DESCRIPTION_CHARS]
    compact = {**function, "description": description,
               "parameters": compact_parameters(function.get("parameters") or {"type": "object"})}
    return {**tool, "function": compact}


@dataclass(frozen=True)
class LeftOut:
    name: str
    reason: str


@dataclass
class Offer:
    """The tools of one upstream call, and what was done to fit them."""

    tools: list[dict[str, Any]]
    tokens: int  # counted tokens of `tools`
    full_tokens: int  # of every tool, uncompacted
    budget: int
    compacted: bool = False
    left_out: list[LeftOut] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        """For /api/health: what the last turn's last call sent, and what it left out and why."""
        return {"offered": len(self.tools), "left_out_count": len(self.left_out), "budget_tokens": self.budget,
                "tokens_sent": self.tokens, "tokens_uncompacted": self.full_tokens, "compacted": self.compacted,
                "left_out": [{"name": item.name, "reason": item.reason} for item in self.left_out[:REPORT_NAMES]]}


class _Entry:
    """What Ghost keeps about one schema: its content key, compact form and words."""

    __slots__ = ("parameters", "key", "compact", "name_words", "description_words")

    def __init__(self, parameters: Any, key: bytes) -> None:
        self.parameters = parameters  # the reference keeps its id from being reused
        self.key = key
        self.compact: dict[str, Any] | None = None
        self.name_words: set[str] | None = None
        self.description_words: set[str] = set()


@dataclass
class _Catalogue:
    entries: list[_Entry]  # the references keep the ids of the memo's key from being reused
    names: list[str]
    full: list[int]  # tokens of each schema as given
    compact: list[dict[str, Any]]
    short: list[int] = field(default_factory=list)  # tokens of each compact form


class SchemaTokens:
    """Token counts of tool schemas and their compact forms; one per process, shared by every turn."""

    def __init__(self, counter: TokenCounter, *, bundled: bool) -> None:
        self.counter = counter
        self.bundled = bundled  # the bundled server renders one line per tool (ghost.llm.toolcalls)
        self._memo: OrderedDict[tuple[Any, Any, int], _Entry] = OrderedDict()  # (name, description, id(parameters))
        self._lists: OrderedDict[bytes, list[dict[str, Any]]] = OrderedDict()  # see `intern`
        self._catalogues: OrderedDict[tuple[int, ...], _Catalogue] = OrderedDict()  # see `catalogue`

    def intern(self, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The client's tool list as the objects of an earlier turn that sent the same list, so
        everything known about them is found by identity; one encoding of the list per turn."""
        if not tools:
            return tools
        try:
            # marshal (format 2, without back-references): JSON's types, encoded faster than JSON;
            # equal bytes mean equal content, so a hit is never wrong.
            encoded = marshal.dumps(tools, 2)
        except ValueError:
            return tools
        key = hashlib.blake2b(encoded, digest_size=16).digest()
        known = self._lists.get(key)
        if known is not None:
            self._lists.move_to_end(key)
            return known
        self._lists[key] = tools
        if len(self._lists) > LISTS_MEMO:
            self._lists.popitem(last=False)
        return tools

    def entry(self, tool: dict[str, Any]) -> _Entry:
        function = tool.get("function") or {}
        parameters = function.get("parameters")
        ident = (function.get("name"), function.get("description"), id(parameters))
        try:
            found = self._memo.get(ident)
        except TypeError:  # a name or description that is not hashable: no memo
            return _Entry(parameters, self._content_key(tool))
        if found is not None and found.parameters is parameters:
            return found
        found = self._memo[ident] = _Entry(parameters, self._content_key(tool))
        if len(self._memo) > MEMO_ENTRIES:
            self._memo.popitem(last=False)
        return found

    def _content_key(self, tool: dict[str, Any]) -> bytes:
        return hashlib.blake2b(self._text(tool).encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def _text(self, tool: dict[str, Any]) -> str:
        if self.bundled:
            return tool_line(tool)
        return json.dumps(tool, sort_keys=True, ensure_ascii=False, separators=(",", ":"))

    def compact(self, tool: dict[str, Any]) -> dict[str, Any]:
        """The compact form, the same object every round (so its count is a memo hit too)."""
        entry = self.entry(tool)
        if entry.compact is None:
            entry.compact = compact_schema(tool)
        return entry.compact

    def entry_relevance(self, entry: _Entry, tool: dict[str, Any], query: set[str]) -> int:
        """How many of the query's words the tool's name (counted three times) and description share."""
        if not query:
            return 0
        if entry.name_words is None:
            function = tool.get("function") or {}
            entry.name_words = words(str(function.get("name", "")).replace("_", " "))
            entry.description_words = words(str(function.get("description") or "")[:600])
        return 3 * len(entry.name_words & query) + len(entry.description_words & query)

    async def catalogue(self, tools: list[dict[str, Any]]) -> "_Catalogue":
        """Names, counts and compact forms of a tool list; the same schemas as a recent call cost
        one lookup per tool (rounds of a turn, turns of a conversation)."""
        entries = [self.entry(tool) for tool in tools]
        ident = tuple(id(entry) for entry in entries)
        found = self._catalogues.get(ident)
        if found is not None and all(a is b for a, b in zip(found.entries, entries)):
            self._catalogues.move_to_end(ident)
            return found
        full = await self.counts(tools)
        made = _Catalogue(entries, [tool_name(tool) for tool in tools], full, [self.compact(t) for t in tools])
        made.short = await self.counts(made.compact)
        self._catalogues[ident] = made
        if len(self._catalogues) > CATALOGUES_MEMO:
            self._catalogues.popitem(last=False)
        return made

    async def counts(self, tools: list[dict[str, Any]]) -> list[int]:
        keyed = [(self.entry(tool).key, tool) for tool in tools]
        missing = {key: tool for key, tool in keyed if self.counter.cached(key) is None}
        if missing:
            await self.counter.count_keyed([(key, self._text(tool)) for key, tool in missing.items()])
        counts = [self.counter.cached(key) for key, _ in keyed]  # None only if the cache just dropped it
        return [count if count is not None else estimate(self._text(tool)) for count, (_, tool) in zip(counts, keyed)]

    async def overhead(self) -> int:
        """Tokens a non-empty tool section adds beyond its schemas (the bundled model's instructions)."""
        if not self.bundled:
            return 0
        text = TOOLS_PROMPT.format(tools="")
        return await self.counter.count_text(b"tools-instructions" + text.encode(), text)


def used_names(messages: list[dict[str, Any]]) -> list[str]:
    """The tools the conversation has called, the most recent first."""
    names: list[str] = []
    for message in reversed(messages):
        for call in message.get("tool_calls") or []:
            name = (call.get("function") or {}).get("name") if isinstance(call, dict) else None
            if isinstance(name, str) and name not in names:
                names.append(name)
    return names


def latest_words(messages: list[dict[str, Any]], count: int = 3) -> set[str]:
    """The words of the newest messages that are not Ghost's or the client's system prompt."""
    found: set[str] = set()
    taken = 0
    for message in reversed(messages):
        if message.get("role") == "system":
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        if isinstance(content, str):
            found |= words(content[:4000])
        taken += 1
        if taken >= count:
            break
    return found


class ToolChooser:
    """One turn's choice of tools for each upstream call, and its `find_tools`."""

    def __init__(self, tokens: SchemaTokens, required: tuple[str, ...] = ()) -> None:
        self.tokens = tokens
        self.required = required  # named by the request's tool_choice: offered before anything else
        self.unlocked: list[str] = []  # found by find_tools, the latest first: offered from the next round on
        self.last: Offer | None = None
        # the last call's tools, their names and the indices sent (None: all were)
        self._left: tuple[list[dict[str, Any]], list[str], set[int] | None] = ([], [], None)

    async def choose(self, tools: list[dict[str, Any]], messages: list[dict[str, Any]], budget: int) -> Offer:
        """The tools to send within `budget` tokens (see the module docstring)."""
        catalogue = await self.tokens.catalogue(tools)
        overhead = await self.tokens.overhead() if tools else 0
        total = sum(catalogue.full) + overhead
        if total <= budget:
            return self._remember(Offer(tools, total, total, budget), tools, catalogue, None)
        short = catalogue.short
        if sum(short) + overhead <= budget:
            offer = Offer(catalogue.compact, sum(short) + overhead, total, budget, compacted=True)
            return self._remember(offer, tools, catalogue, None)
        finder = (await self.tokens.counts([FIND_TOOLS_SCHEMA]))[0]
        room = budget - overhead - finder
        chosen: set[int] = set()
        used = 0
        for index in self._ranked(tools, catalogue, messages):
            if used + short[index] <= room:
                chosen.add(index)
                used += short[index]
        sent = [catalogue.compact[i] for i in sorted(chosen)]
        if room >= 0:
            sent.append(FIND_TOOLS_SCHEMA)
            used += finder
        reason = (f"over the tool budget ({budget:,} tokens, --context-tools-share) and less relevant to "
                  f"this turn; reachable through {FIND_TOOLS}")
        left = [LeftOut(catalogue.names[i], reason) for i in range(len(tools)) if i not in chosen]
        offer = Offer(sent, used + overhead if sent else 0, total, budget, compacted=True, left_out=left)
        return self._remember(offer, tools, catalogue, chosen)

    def _ranked(self, tools: list[dict[str, Any]], catalogue: _Catalogue, messages: list[dict[str, Any]]) -> list[int]:
        names = catalogue.names
        first = [*self.required, *self.unlocked, *PINNED, *used_names(messages)]
        pinned = {name: rank for rank, name in reversed(list(enumerate(first)))}
        query = latest_words(messages)
        scores = [self.tokens.entry_relevance(entry, tool, query) for entry, tool in zip(catalogue.entries, tools)]
        return sorted(range(len(names)), key=lambda i: (pinned.get(names[i], len(first)), -scores[i], i))

    def _remember(self, offer: Offer, tools: list[dict[str, Any]], catalogue: _Catalogue,
                  chosen: set[int] | None) -> Offer:
        """Keep the offer, and the tools it left out for find_tools (`chosen` None: nothing left out)."""
        self._left = (tools, catalogue.names, chosen)
        self.last = offer
        return offer

    @property
    def _hidden(self) -> dict[str, dict[str, Any]]:
        tools, names, chosen = self._left
        if chosen is None:
            return {}
        return {names[i]: tool for i, tool in enumerate(tools) if i not in chosen}

    def find(self, arguments: Any) -> tuple[str, str]:
        """Run `find_tools`: its result for the model and a one-line summary."""
        query_text = arguments.get("query") if isinstance(arguments, dict) else None
        if not isinstance(query_text, str) or not query_text.strip():
            return json.dumps({"error": "find_tools needs a query: words describing the tool you need"}), \
                f"{FIND_TOOLS}: no query"
        if not self._hidden:
            return json.dumps({"tools": [], "note": "every tool is already offered"}), f"{FIND_TOOLS}: none hidden"
        query_text = query_text[:FIND_QUERY_CHARS]
        query = words(query_text.replace("_", " "))
        exact = query_text.strip()
        scored = [(tool, self.tokens.entry_relevance(self.tokens.entry(tool), tool, query))
                  for tool in self._hidden.values()]
        scored.sort(key=lambda pair: (tool_name(pair[0]) != exact, -pair[1]))
        found = [tool for tool, score in scored if tool_name(tool) == exact or score > 0][:FIND_RESULTS]
        picked = [tool_name(tool) for tool in found]  # the latest search's picks rank first
        self.unlocked = [*picked, *(name for name in self.unlocked if name not in picked)]
        if not found:
            others = sorted(self._hidden)[:REPORT_NAMES]
            return json.dumps({"tools": [], "note": "no tool matches; the tools not offered are: "
                               + ", ".join(others)}), f"{FIND_TOOLS}: no match"
        listed: list[dict[str, Any]] = []
        room = FIND_RESULT_CHARS
        for tool in found:  # bounded: a client's schema has no cap of Ghost's
            item = {"name": tool_name(tool), "description": str(tool["function"].get("description") or "")[:400],
                    "parameters": self.tokens.compact(tool)["function"]["parameters"]}
            size = len(json.dumps(item, ensure_ascii=False))
            if size > room:
                item = {"name": item["name"], "description": item["description"],
                        "parameters": "too large to list here; call it with the arguments its description asks for"}
            room -= min(size, room)
            listed.append(item)
        return (json.dumps({"tools": listed, "note": "these tools are callable from your next step"},
                           ensure_ascii=False),
                f"{FIND_TOOLS}: {', '.join(tool_name(t) for t in found)}")
