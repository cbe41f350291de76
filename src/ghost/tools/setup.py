"""Wiring: build the sandbox backend, the scratchpad, the skills and the tool registry at start."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack

from ghost.runtime import Runtime
from ghost.sandbox.factory import make_executor
from ghost.store.scratchpad import Scratchpad
from ghost.tools.execute import ExecuteTool
from ghost.tools.files import FileLimits, FileTools
from ghost.tools.registry import Registry
from ghost.tools.scratchpad import ScratchpadTools
from ghost.tools.skill_store import SkillStore
from ghost.tools.skills import SkillTools

log = logging.getLogger("ghost.tools")
EXECUTOR_KEY = "executor"


async def start_tools(runtime: Runtime, stack: AsyncExitStack) -> Registry:
    """Set `runtime.tools` and `runtime.extras["sandbox_info"]`; the backend is closed with `stack`."""
    settings = runtime.settings
    executor = await make_executor(settings, runtime.sandbox_root)
    stack.push_async_callback(executor.aclose)
    registry = Registry(result_max_chars=settings.tool_result_max_chars)
    files = FileTools(runtime.sandbox_root, FileLimits(
        file_size_bytes=settings.sandbox_file_size_bytes, max_entries=settings.tool_list_max_entries,
        search_max_file_bytes=settings.tool_search_max_file_bytes,
        read_max_chars=settings.tool_result_max_chars - 200, max_depth=settings.sandbox_walk_max_depth))
    pad = ScratchpadTools(Scratchpad(runtime.db, max_entries=settings.scratchpad_max_entries,
                                     max_value_bytes=settings.scratchpad_max_value_bytes))
    store = SkillStore(runtime.sandbox_root, executor, lambda: registry.builtin_names,
                       max_count=settings.skills_max_count, failure_threshold=settings.skill_failure_threshold)
    skills = SkillTools(store, settings.tool_code_max_chars)
    registry.add_functions(*files.functions(), *ExecuteTool(executor, settings.tool_code_max_chars).functions(),
                           *pad.functions(), *skills.functions())
    registry.add_summary(pad.prompt_summary)
    registry.add_provider(skills)
    await store.scan_bounded(settings.skill_load_timeout_s)  # never fails or hangs the start
    runtime.after_workspace_load.append(store.scan)
    runtime.extras["skills"] = store  # /api/health shows what its scans loaded and skipped
    runtime.tools = registry
    runtime.extras["sandbox_info"] = executor.info()
    runtime.extras[EXECUTOR_KEY] = executor  # MCP servers start in sandboxes like its runs
    runtime.extras["scratchpad"] = pad.pad  # for the workspace archive (all() / replace_all())
    return registry
