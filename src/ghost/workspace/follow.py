"""Following loads made by other replicas sharing the workspace root.

A load swaps a new folder in at the sandbox's path with one rename (ghost.workspace.swap), so the
path then names another directory. The replica that loaded runs its after-load hooks (skills
re-scan, MCP servers restarted in the new folder, memos forgotten); every other replica notices the
new directory at its next turn and runs its own. One stat per turn; only with a shared store.
"""

from __future__ import annotations

import os
from pathlib import Path

from ghost.sandbox import fspool
from ghost.workspace.service import Workspace


def folder_identity(root: Path) -> tuple[int, int] | None:
    """(device, inode) of the directory at `root` now; None if there is none. Compared, never opened."""
    try:
        info = os.stat(root)
    except OSError:
        return None
    return info.st_dev, info.st_ino


class LoadFollower:
    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._seen: tuple[int, int] | None = None

    async def start(self) -> None:
        self._seen = await fspool.run(folder_identity, self.workspace.sandbox_root)
        self.workspace.after_load.append(self._loaded_here)

    async def check(self) -> bool:
        """Run the after-load hooks if another replica loaded the workspace since; True if it had."""
        now = await fspool.run(folder_identity, self.workspace.sandbox_root)
        if now == self._seen:
            return False
        self._seen = now
        for hook in self.workspace.after_load:
            await hook()
        return True

    async def _loaded_here(self) -> None:
        self._seen = await fspool.run(folder_identity, self.workspace.sandbox_root)
