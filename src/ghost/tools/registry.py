"""The tool registry: Ghost's built-in tools plus its acquired skills, one dispatcher for all.

`call` never lets a model's mistake or a tool's failure end the turn: bad JSON, a missing,
unknown or wrong-typed argument, an error a tool raised, a sandbox limit — each comes back as a
`ToolResult(ok=False)` whose message says what to change. Results are cut to a bounded size.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ghost.errors import GhostError
from ghost.tools.base import ToolContext, ToolResult
from ghost.tools.schema import SchemaError, check_schema, function_schema, validate

log = logging.getLogger("ghost.tools")
TOOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
Handler = Callable[..., Awaitable[ToolResult]]
# Observing a call (ghost.observe): (tool label, tool name, call id, the call, arguments=the model's
# JSON) -> its result.
CallObserver = Callable[..., Awaitable[ToolResult]]
UNKNOWN_TOOL = "unknown"  # the label of a call to a tool no source has


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    handler: Handler  # called with the validated arguments as keywords
    # False for tools whose source checks the arguments itself (an MCP server, against a schema
    # that may use more of JSON Schema than Ghost's validator understands).
    check_arguments: bool = True
    # Where a tool comes from, for metrics: "" for Ghost's own (counted by name), "skill",
    # "mcp:<server>" — so the label set stays bounded whatever skills and servers add.
    source: str = ""

    def schema(self) -> dict[str, Any]:
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


def tool_from_function(fn: Handler) -> Tool:
    """A Tool whose name, description and schema come from `fn`'s signature and docstring."""
    name, description, parameters = function_schema(fn)
    return Tool(name, description, parameters, fn)


class ToolProvider(Protocol):
    """A source of tools that change while Ghost runs (acquired skills)."""

    def tools(self) -> list[Tool]: ...

    async def prompt_summary(self, max_chars: int) -> str: ...


class Registry:
    """Implements `ghost.tools.base.ToolRegistry`."""

    def __init__(self, result_max_chars: int) -> None:
        self.result_max_chars = result_max_chars
        self._builtin: dict[str, Tool] = {}
        self._providers: list[ToolProvider] = []
        self._summaries: list[Callable[[int], Awaitable[str]]] = []
        self._observer: CallObserver | None = None
        self._label: Callable[[str, str], str] = lambda name, source: source or name

    # --- building -------------------------------------------------------------------------------
    def add(self, tool: Tool) -> None:
        if not TOOL_NAME.match(tool.name):
            raise SchemaError(f"tool name {tool.name!r} is not valid")
        if tool.name in self._builtin:
            raise SchemaError(f"tool {tool.name!r} is registered twice")
        check_schema(tool.parameters)
        self._builtin[tool.name] = tool

    def add_functions(self, *functions: Handler) -> None:
        for fn in functions:
            self.add(tool_from_function(fn))

    def add_provider(self, provider: ToolProvider) -> None:
        self._providers.append(provider)
        self._summaries.append(provider.prompt_summary)

    def observe(self, label: Callable[[str, str], str], observer: CallObserver) -> None:
        """Hand every call to `observer`; `label(name, source)` names a tool in the metrics."""
        self._label, self._observer = label, observer

    def add_summary(self, summary: Callable[[int], Awaitable[str]]) -> None:
        self._summaries.insert(0, summary)

    @property
    def builtin_names(self) -> frozenset[str]:
        return frozenset(self._builtin)

    # --- the ToolRegistry protocol --------------------------------------------------------------
    def schemas(self) -> list[dict[str, Any]]:
        return [tool.schema() for tool in self._all().values()]

    def has(self, name: str) -> bool:
        return self._find(name) is not None

    async def call(self, name: str, arguments: str, context: ToolContext) -> ToolResult:
        tool = self._find(name)
        if self._observer is None:
            return await self._call(tool, name, arguments, context)
        label = UNKNOWN_TOOL if tool is None else self._label(tool.name, tool.source)
        return await self._observer(label, name, context.call_id, self._call(tool, name, arguments, context),
                                    arguments=arguments)

    async def _call(self, tool: Tool | None, name: str, arguments: str, context: ToolContext) -> ToolResult:
        if tool is None:
            return ToolResult(f"There is no tool named {name!r}. Available: {', '.join(self._all())}.",
                              ok=False, summary=f"unknown tool {name}")
        parsed = _parse_arguments(arguments)
        if isinstance(parsed, str):
            return ToolResult(f"{name}: {parsed}", ok=False, summary=f"{name}: bad arguments")
        errors = validate(tool.parameters, parsed) if tool.check_arguments else []
        if errors:
            return ToolResult(f"{name}: invalid arguments: {'; '.join(errors[:10])}. Parameters: "
                              f"{json.dumps(tool.parameters)[:2000]}", ok=False, summary=f"{name}: bad arguments")
        return self._bounded(await self._run(tool, parsed, context))

    async def prompt_summary(self, max_chars: int) -> str:
        parts: list[str] = []
        for summary in self._summaries:
            room = max_chars - sum(len(p) + 1 for p in parts)
            if room <= 0:
                break
            text = await summary(room)
            if text:
                parts.append(text[:room])
        return "\n".join(parts)

    # --- internals ------------------------------------------------------------------------------
    def _all(self) -> dict[str, Tool]:
        tools = dict(self._builtin)
        for provider in self._providers:
            for tool in provider.tools():
                tools.setdefault(tool.name, tool)  # a built-in name always wins
        return tools

    def _find(self, name: str) -> Tool | None:
        if name in self._builtin:
            return self._builtin[name]
        for provider in self._providers:
            for tool in provider.tools():
                if tool.name == name:
                    return tool
        return None

    async def _run(self, tool: Tool, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        try:
            return await tool.handler(**arguments)
        except GhostError as exc:  # ToolError, SandboxError, UnsafePath, LimitExceeded, ...
            return ToolResult(f"{tool.name} failed: {exc.message}", ok=False, summary=f"{tool.name} failed")
        except OSError as exc:  # strerror only: the host path of the file is not the model's business
            return ToolResult(f"{tool.name} failed: {exc.strerror or type(exc).__name__}", ok=False,
                              summary=f"{tool.name} failed")
        except Exception:
            # A bug in Ghost, not the model's doing: logged with its traceback for us, and a plain
            # failure for the model so the turn goes on.
            log.exception("tool %s raised (request %s)", tool.name, context.request_id)
            return ToolResult(f"{tool.name} failed with an internal error in Ghost.", ok=False,
                              summary=f"{tool.name}: internal error")

    def _bounded(self, result: ToolResult) -> ToolResult:
        limit = self.result_max_chars
        if len(result.content) <= limit:
            return result
        marker = f"\n[... result cut: {len(result.content):,} characters, the middle left out ...]\n"
        head = (limit - len(marker)) * 2 // 3
        tail = limit - len(marker) - head
        content = result.content[:head] + marker + result.content[len(result.content) - tail:]
        return ToolResult(content, ok=result.ok, summary=result.summary)


def _parse_arguments(arguments: str | dict[str, Any] | None) -> dict[str, Any] | str:
    """The arguments as an object, or a message saying what is wrong with them."""
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or not str(arguments).strip():
        return {}  # some models send "" for a tool without parameters
    try:
        parsed = json.loads(arguments)
    except (ValueError, TypeError) as exc:
        return f"arguments are not valid JSON ({exc}); send a JSON object"
    if not isinstance(parsed, dict):
        return "arguments must be a JSON object of named parameters"
    return parsed
