"""Save the workspace as a zip, and load one back: the services behind /api/workspace/*.

Save: snapshot scratchpad and history in one transaction, zip the sandbox in a worker thread into
an unnamed temp file, hand the file to the route to stream. Holds the gate shared while it reads,
so a load cannot swap the workspace under it.

Load: stream the upload to a temp file; check and unpack it into a staging folder next to the
sandbox (nothing live is touched, so a bad archive changes nothing); then, holding the gate
exclusively, move the live skills into the staged sandbox, add the archive's new skills, swap the
staged sandbox with the live one (one atomic exchange), and restore scratchpad and history in one
transaction. If the restore fails the renames are played back. Finally the `Workspace.after_load`
hooks run (the skills subsystem re-scans), each with a timeout and none able to turn the committed
load into an error, and the staging folder, now holding the old sandbox, is removed (iteratively:
the old sandbox may be a tree thousands of levels deep).

The archive's scratchpad is checked against the scratchpad's own limits before anything changes:
an over-limit archive is refused (413) with the workspace untouched.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ghost.errors import GhostError
from ghost.sandbox import fswalk, fspool
from ghost.sandbox.root import give_tree, prepare_sandbox_root
from ghost.workspace import state
from ghost.workspace.build import BuiltArchive, build_archive
from ghost.workspace.layout import CHUNK, IO_BLOCK, SKILLS_DIR, require_tmp_dir
from ghost.workspace.stage import Staged, stage_archive
from ghost.workspace.swap import RenameJournal
from ghost.workspace.tasks import in_thread_to_completion, stoppable, to_completion
from ghost.workspace.service import Workspace
from ghost.workspace.zipcheck import Limits

log = logging.getLogger("ghost.workspace")

MB = 1024 * 1024


# --- save -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SavedWorkspace:
    archive: BuiltArchive
    filename: str


async def save_workspace(workspace: Workspace, session_id: str, chat_history: list[Any] | None) -> SavedWorkspace:
    """Build the archive; `chat_history` from the client replaces the stored one when given."""
    settings = workspace.settings
    now = datetime.now(timezone.utc)
    async with workspace.gate.turn():
        snapshot = await workspace.db.run(state.snapshot, workspace.name, session_id, chat_history is None)
        if chat_history is not None:
            snapshot = replace(snapshot, chat_history=chat_history)
        session_json = state.encode_session(snapshot, session_id, now.isoformat())
        built = await stoppable(lambda stop: build_archive(
            workspace.sandbox_root, require_tmp_dir(workspace.sandbox_root), session_json,
            settings.workspace_save_max_bytes, stop, settings.sandbox_walk_max_depth))
    return SavedWorkspace(archive=built, filename=f"workspace_{now:%Y%m%d_%H%M%S}.zip")


# --- load -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadResult:
    chat_history: list[dict[str, Any]]
    files: int


async def load_workspace(workspace: Workspace, upload: Path, session_id: str) -> LoadResult:
    """Load the received archive at `upload` (a temp file under the sandbox's tmp dir; removed here)."""
    started = time.perf_counter()
    try:
        result = await _load_from(workspace, upload, session_id)
    finally:
        await in_thread_to_completion(_remove_file, upload)
    log.info("workspace load: %d files loaded in %.2f s", result.files, time.perf_counter() - started)
    return result


async def _load_from(workspace: Workspace, upload: Path, session_id: str) -> LoadResult:
    settings = workspace.settings
    limits = Limits(settings.workspace_load_max_entries, settings.workspace_load_max_bytes)
    scratch = require_tmp_dir(workspace.sandbox_root)
    stage_root = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="stage-", dir=scratch))
    try:
        staged = await stoppable(lambda stop: stage_archive(
            upload, stage_root, limits, settings.max_request_bytes, stop))
        _check_scratchpad(workspace, staged)
        async with workspace.gate.exclusive():
            files = await to_completion(_commit(workspace, staged, session_id))
            await _after_load(workspace)
    finally:
        await in_thread_to_completion(remove_staging, stage_root)
    return LoadResult(chat_history=staged.state.chat_history, files=files)


def _check_scratchpad(workspace: Workspace, staged: Staged) -> None:
    """The archive's scratchpad within the scratchpad's own limits (the tools' limits), or 413/400."""
    workspace.scratchpad.checked_entries(staged.state.scratchpad)


async def _after_load(workspace: Workspace) -> None:
    """Run the after-load hooks; the load is committed, so a failing or slow hook is only logged."""
    timeout = workspace.settings.skill_load_timeout_s
    for hook in workspace.after_load:
        try:
            await asyncio.wait_for(hook(), timeout)
        except Exception as exc:  # noqa: BLE001 - nothing may undo a committed load (TimeoutError included)
            log.error("workspace load: a follow-up step failed after the load was committed: %r", exc)


def remove_staging(stage_root: Path) -> None:
    """Remove the staging folder (now holding the old sandbox, however deep); never raises."""
    try:
        fswalk.remove_path(stage_root)
    except OSError as exc:
        log.warning("workspace load: could not remove the staging folder: %s", exc.strerror)


async def _commit(workspace: Workspace, staged: Staged, session_id: str) -> int:
    """Swap the staged workspace in and restore the database; all or nothing."""
    journal = RenameJournal()
    try:
        added = await fspool.run(swap_in, workspace.sandbox_root, staged, journal)
    except OSError as exc:
        # Nothing changed (swap_in undid its steps); this is the server's layout, not the archive.
        log.error("workspace load: could not swap the sandbox in: %s", exc)
        raise GhostError(
            f"could not swap the loaded workspace in ({exc.strerror}); nothing was changed") from exc
    try:
        await workspace.db.run(state.restore, workspace.name, session_id, staged.state)
    except BaseException:
        await fspool.run(journal.undo)
        raise
    finally:
        workspace.scratchpad.changed()  # the restore replaced it: the system prompt's previews are stale
    return staged.sandbox_files + added


def swap_in(live: Path, staged: Staged, journal: RenameJournal) -> int:
    """Put the staged sandbox in place of the live one, keeping live skills; returns skill files added.

    Afterwards the staged sandbox path holds the old sandbox. On failure every rename is undone.
    Renames take paths: every folder on them is Ghost's own except the last name, which a rename
    never follows. What sandboxed code may have swapped in for the live skills folder is checked
    with lstat after it was moved out of the sandbox's reach, in `merge_skills`.
    """
    try:
        if _is_real_folder(live / SKILLS_DIR):
            journal.rename(live / SKILLS_DIR, staged.sandbox / SKILLS_DIR)
        added = merge_skills(staged, journal)
        # Never the live root's mode: sandboxed code may have set that (chmod 0) to break Ghost.
        prepare_sandbox_root(staged.sandbox)
        journal.exchange(live, staged.sandbox)
    except BaseException:
        journal.undo()
        raise
    return added


def skill_name(entry_name: str) -> str:
    """Which skill a file or folder in acquired_skills/ belongs to: `web.py`, `web.json`, `web/` → `web`."""
    return entry_name.split(".", 1)[0] or entry_name


def merge_skills(staged: Staged, journal: RenameJournal) -> int:
    """Add the archive's skills whose names are not taken yet; a skill present in the workspace wins."""
    target = staged.sandbox / SKILLS_DIR
    if os.path.lexists(target) and not _is_real_folder(target):
        # The live folder was swapped for a link between the check and the move: refuse to write
        # through it (the journal puts the link back where it was).
        raise OSError(errno.EAGAIN, f"{SKILLS_DIR}/ changed while the load moved it; try again")
    existing = {skill_name(name) for name in os.listdir(target)} if os.path.lexists(target) else set()
    added, kept = 0, set()
    for name in sorted(os.listdir(staged.skills)):
        if skill_name(name) in existing:
            kept.add(skill_name(name))
            continue
        if not os.path.lexists(target):
            target.mkdir()
            give_tree(target)  # made by Ghost in its temp space: the sandbox identity's, like the rest
        give_tree(staged.skills / name)
        journal.rename(staged.skills / name, target / name)
        added += staged.skill_files[name]
    if kept:
        log.info("workspace load: kept the existing skills %s, not the archive's copies", sorted(kept))
    return added


def _is_real_folder(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _remove_file(path: Path) -> None:
    path.unlink(missing_ok=True)


async def archive_chunks(built: BuiltArchive) -> AsyncIterator[bytes]:
    """The archive in 64 KB chunks, read a block at a time in a worker thread; closes the file."""
    try:
        while block := await asyncio.to_thread(built.file.read, IO_BLOCK):
            for start in range(0, len(block), CHUNK):
                yield block[start:start + CHUNK]
    finally:
        await in_thread_to_completion(built.file.close)
