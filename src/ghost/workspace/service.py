"""The workspace: the sandbox folder, the database, the stores kept in it, and the gate between
agent turns and a workspace load. Built once at start (`open_workspace`), handed to what needs it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from ghost.config import Settings
from ghost.store.db import Database
from ghost.store.history import History
from ghost.store.scratchpad import Scratchpad
from ghost.workspace.gate import WorkspaceGate
from ghost.sandbox.root import prepare_sandbox_root

AfterLoad = Callable[[], Awaitable[None]]


@dataclass
class Workspace:
    settings: Settings
    db: Database
    sandbox_root: Path
    # Agent turns, tool calls, uploads and saves hold it shared (`async with gate.turn()`), a load
    # exclusively: a load never swaps files under a running tool.
    gate: WorkspaceGate
    scratchpad: Scratchpad
    history: History
    # Run after a load has swapped files and state in (the skills re-scan, MCP servers restart...).
    after_load: list[AfterLoad] = field(default_factory=list)


async def open_workspace(settings: Settings) -> Workspace:
    """Open the database (closed by the caller: `workspace.db.close()`) and make the sandbox folder."""
    sandbox_root = settings.sandbox_path
    prepare_sandbox_root(sandbox_root)  # again, with its owner, once the sandbox backend knows it
    db = await Database(settings.database_path).open()
    scratchpad = Scratchpad(db, max_entries=settings.scratchpad_max_entries,
                            max_value_bytes=settings.scratchpad_max_value_bytes)
    return Workspace(settings, db, sandbox_root, WorkspaceGate(settings.workspace_wait_s), scratchpad, History(db))
