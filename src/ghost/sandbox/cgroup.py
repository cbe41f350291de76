"""A `pids` cgroup per sandbox run, when Ghost may create one: the process limit that always holds.

RLIMIT_NPROC is counted per user, and the kernel does not enforce it at all for root. Set inside
the run's own user namespace (which bubblewrap creates) it counts only that run's processes —
that is how a non-root Ghost bounds a fork bomb. A root Ghost needs a cgroup instead: the
`pids` controller caps the number of tasks in a group and everything forked inside it.

Found here: cgroup v1 with a `pids` hierarchy we can write to, or cgroup v2 where our own
cgroup already delegates `pids` to its children. Anything else: unavailable, and the caller
reports that the process limit is not enforced.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
from pathlib import Path

log = logging.getLogger("ghost.sandbox")

CGROUP_ROOT = Path("/sys/fs/cgroup")
_counter = itertools.count()


class PidsCgroups:
    """Creates per-run child groups below one parent directory."""

    def __init__(self, parent: Path) -> None:
        self.parent = parent

    @classmethod
    def discover(cls) -> "PidsCgroups | None":
        parent = _v1_parent() or _v2_parent()
        if parent is None or not _can_create_below(parent):
            return None
        return cls(parent)

    def sweep_stale(self) -> int:
        """Remove groups left behind by Ghost processes that are gone; how many were removed."""
        removed = 0
        for entry in self.parent.glob("ghost-*-*"):
            owner = entry.name.split("-")[1]
            if owner.isdigit() and not _alive(int(owner)) and RunCgroup(entry).remove():
                removed += 1
        return removed

    def create(self, max_pids: int) -> "RunCgroup":
        path = self.parent / f"ghost-{os.getpid()}-{next(_counter)}"
        path.mkdir()
        try:
            (path / "pids.max").write_text(str(max_pids))
        except OSError:
            path.rmdir()
            raise
        return RunCgroup(path)


class RunCgroup:
    """One run's group: put a process in, kill everything in it, remove it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def pids(self) -> list[int]:
        try:
            return [int(line) for line in (self.path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def kill_all(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def remove(self) -> bool:
        """Remove the group once empty; False if processes are still dying in it."""
        self.kill_all()
        try:
            self.path.rmdir()
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _own_cgroup(controller: str) -> str | None:
    """Our path in the hierarchy holding `controller` ('' for the v2 unified hierarchy)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path
    return None


def _v1_parent() -> Path | None:
    own = _own_cgroup("pids")
    base = CGROUP_ROOT / "pids"
    if own is None or not (base / "cgroup.procs").exists():
        return None
    return base / own.lstrip("/")


def _v2_parent() -> Path | None:
    own = _own_cgroup("")
    if own is None:
        return None
    for base in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
        here = base / own.lstrip("/")
        try:
            if "pids" in (here / "cgroup.subtree_control").read_text().split():
                return here
        except OSError:
            continue
    return None


def _can_create_below(parent: Path) -> bool:
    probe = parent / f"ghost-probe-{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        log.debug("cannot create cgroups below %s: %s", parent, exc)
        return False
    return True
