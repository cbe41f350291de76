"""Wiring: build the sandbox backend, the skills and Ghost's own tools at start."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ghost.config import Settings
from ghost.observe import Telemetry
from ghost.sandbox.base import Executor
from ghost.sandbox.factory import make_executor
from ghost.store.scratchpad import Scratchpad
from ghost.tools.execute import ExecuteTool
from ghost.tools.files import FileLimits, FileTools
from ghost.tools.registry import Registry
from ghost.tools.scratchpad import ScratchpadTools
from ghost.tools.skill_store import SkillStore
from ghost.tools.skills import SkillTools



@dataclass(frozen=True)
class Toolbox:
    """The tool registry and what it was built on, for the parts that need more than the registry."""

    registry: Registry
    executor: Executor  # MCP servers start in sandboxes like `execute`'s runs
    skills: SkillStore  # /api/health shows what its scans loaded and skipped; a load re-scans
    sandbox_info: dict[str, Any]  # the backend, its isolation and limits (/api/health, the prompt)

    @property
    def sandbox_network(self) -> bool:
        return bool(self.sandbox_info.get("network"))


async def start_tools(settings: Settings, sandbox_root: Path, scratchpad: Scratchpad,
                      stack: AsyncExitStack, executor: Executor | None = None,
                      telemetry: Telemetry | None = None) -> Toolbox:
    """Start the sandbox backend (closed with `stack`), scan the skills, and register every tool.
    `executor`: one already made for this sandbox folder (another user's: `Executor.with_root`)."""
    executor = executor or await make_executor(settings, sandbox_root)
    stack.push_async_callback(executor.aclose)
    registry = Registry(result_max_chars=settings.tool_result_max_chars)
    if telemetry is not None:
        executor.on_outcome = telemetry.sandbox_run
        registry.observe(telemetry.tool_label, telemetry.tool_call)
    files = FileTools(sandbox_root, FileLimits(
        file_size_bytes=settings.sandbox_file_size_bytes, max_entries=settings.tool_list_max_entries,
        search_max_file_bytes=settings.tool_search_max_file_bytes,
        read_max_chars=settings.tool_result_max_chars - 200, max_depth=settings.sandbox_walk_max_depth))
    pad = ScratchpadTools(scratchpad)
    store = SkillStore(sandbox_root, executor, lambda: registry.builtin_names,
                       max_count=settings.skills_max_count, failure_threshold=settings.skill_failure_threshold,
                       schema_max_chars=settings.skill_schema_max_chars)
    skills = SkillTools(store, settings.tool_code_max_chars)
    registry.add_functions(*files.functions(), *ExecuteTool(executor, settings.tool_code_max_chars).functions(),
                           *pad.functions(), *skills.functions())
    registry.add_summary(pad.prompt_summary)
    registry.add_provider(skills)
    await store.scan_bounded(settings.skill_load_timeout_s)  # never fails or hangs the start
    return Toolbox(registry, executor, store, executor.info())
