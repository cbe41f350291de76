"""A workspace: one user's sandbox folder, its stores in the shared database, and the gate between
its agent turns and a load of it. The built-in admin's is today's single workspace (`open_workspace`);
every other user's is made by `user_workspace` on first use (see ghost.agent.spaces)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from ghost.config import Settings
from ghost.store.db import ADMIN, SQLITE, Database
from ghost.store.engine import database_for
from ghost.store.history import History
from ghost.store.scratchpad import Scratchpad
from ghost.workspace.gate import WorkspaceGate
from ghost.sandbox.root import prepare_sandbox_root

AfterLoad = Callable[[], Awaitable[None]]
WORKSPACES_DIR = "workspaces"  # in GHOST_HOME: one folder per user other than the built-in admin


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
    name: str = ADMIN  # whose workspace: the `workspace` column of its rows in the database
    # Run before an upload or a load writes into the folder: each raises (507) if there is no room.
    room_checks: list[AfterLoad] = field(default_factory=list)
    # Told after an upload or a load wrote into the folder (a measured disk usage is stale).
    on_written: list[Callable[[], None]] = field(default_factory=list)

    async def check_room(self) -> None:
        for check in self.room_checks:
            await check()

    def written(self) -> None:
        for hook in self.on_written:
            hook()


def sandbox_root_for(settings: Settings, name: str) -> Path:
    """Where user `name`'s sandbox folder is: the admin keeps today's (--sandbox-dir or
    <workspace-root>/sandbox), everyone else <workspace-root>/workspaces/<name>/sandbox. `name` is a checked user name
    (ghost.store.users.valid_name): no separator, never '.' or '..'."""
    if name == ADMIN:
        return settings.sandbox_path
    return settings.workspaces_path / WORKSPACES_DIR / name / "sandbox"


def user_workspace(settings: Settings, db: Database, name: str) -> Workspace:
    """User `name`'s workspace over the shared database (blocking: call it off the event loop)."""
    root = sandbox_root_for(settings, name)
    # The one place a sandbox root is made: owner (the sandbox identity when Ghost is root) and mode.
    prepare_sandbox_root(root)
    scratchpad = Scratchpad(db, max_entries=settings.scratchpad_max_entries,
                            max_value_bytes=settings.scratchpad_max_value_bytes, workspace=name)
    # Across replicas (PostgreSQL) the gate also holds the workspace's lease in the shared store.
    gate = WorkspaceGate(settings.workspace_wait_s) if db.dialect == SQLITE else WorkspaceGate(
        settings.workspace_wait_s, lease=lambda exclusive, wait: db.lease(name, exclusive=exclusive, wait_s=wait))
    return Workspace(settings, db, root, gate, scratchpad, History(db, name), name=name)


async def open_workspace(settings: Settings) -> Workspace:
    """Open the database (closed by the caller: `workspace.db.close()`) and the admin's workspace."""
    db = await database_for(settings.database_url, settings.database_path,
                            pool_size=settings.database_pool_size).open()
    return user_workspace(settings, db, ADMIN)
