"""A `pids` cgroup per sandbox run, when Ghost may create one: the process limit that always holds.

RLIMIT_NPROC is counted per user, and the kernel does not enforce it at all for root. Set inside
the run's own user namespace (which bubblewrap creates) it counts only that run's processes —
that is how a non-root Ghost bounds a fork bomb. A root Ghost needs a cgroup instead: the
`pids` controller caps the number of tasks in a group and everything forked inside it.

Found here: cgroup v1 with a `pids` hierarchy we can write to, or cgroup v2 where our own
cgroup already delegates `pids` to its children. Anything else: unavailable, and the caller
reports that the process limit is not enforced.

Memory: RLIMIT_AS bounds each process, but one run may fork many (six 900 MB processes under a
1 GiB per-process limit). Where the `memory` controller is writable too (v1: its own hierarchy;
v2: delegated like `pids`), each run's group also gets a memory limit for all its processes
together, swap included (so the limit cannot be dodged by swapping); past it the kernel's OOM
killer kills inside that group only. Without it, only the per-process limits apply, and
/api/health and the start log say so.
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
    """Creates per-run child groups below one parent directory (and, when it can, a memory group
    of the same name below `memory_parent`, which is the same directory on cgroup v2)."""

    def __init__(self, parent: Path, memory_parent: Path | None = None) -> None:
        self.parent = parent
        self.memory_parent = memory_parent

    @classmethod
    def discover(cls) -> "PidsCgroups | None":
        parent = _v1_parent() or _v2_parent()
        if parent is None or not _can_create_below(parent):
            return None
        memory = _v1_memory_parent() or _v2_memory_parent(parent)
        return cls(parent, memory if memory is not None and _can_create_below(memory) else None)

    @property
    def limits_memory(self) -> bool:
        return self.memory_parent is not None

    def sweep_stale(self) -> int:
        """Remove groups left behind by Ghost processes that are gone; how many were removed."""
        removed = 0
        parents = {self.parent, *([self.memory_parent] if self.memory_parent else [])}
        for entry in (e for parent in parents for e in parent.glob("ghost-*-*")):
            owner = entry.name.split("-")[1]
            if owner.isdigit() and not _alive(int(owner)) and RunCgroup(entry).remove():
                removed += 1
        return removed

    def create(self, max_pids: int, memory_bytes: int | None = None) -> "RunCgroup":
        name = f"ghost-{os.getpid()}-{next(_counter)}"
        group = RunCgroup(self.parent / name)
        group.path.mkdir()
        try:
            (group.path / "pids.max").write_text(str(max_pids))
            if self.memory_parent is not None and memory_bytes is not None:
                group.memory_path = self.memory_parent / name
                group.memory_path.mkdir(exist_ok=True)  # exists already on v2: the same directory
                limit_memory(group.memory_path, memory_bytes)
        except OSError:
            group.remove()
            raise
        return group


def limit_memory(path: Path, limit: int) -> None:
    """All processes of the group together: at most `limit` bytes of RAM, and no swap."""
    if (path / "memory.max").exists():  # v2
        (path / "memory.max").write_text(str(limit))
        _write_if_present(path / "memory.swap.max", "0")
        _write_if_present(path / "memory.oom.group", "1")  # an OOM kill takes the whole run
        return
    (path / "memory.limit_in_bytes").write_text(str(limit))
    # memsw is RAM plus swap: equal to the RAM limit means no swap. Absent without swap accounting.
    if not _write_if_present(path / "memory.memsw.limit_in_bytes", str(limit)):
        _write_if_present(path / "memory.swappiness", "0")


def _write_if_present(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
    except FileNotFoundError:
        return False
    return True


class RunCgroup:
    """One run's group: put a process in, kill everything in it, remove it."""

    def __init__(self, path: Path, memory_path: Path | None = None) -> None:
        self.path = path
        self.memory_path = memory_path  # v1: a second group in the memory hierarchy; v2: == path

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))
        if self.memory_path is not None and self.memory_path != self.path:
            (self.memory_path / "cgroup.procs").write_text(str(pid))

    def memory_events(self) -> str:
        """Why a run died, as far as the memory group knows ("oom_kill 1"...), or ""."""
        if self.memory_path is None:
            return ""
        for name in ("memory.events", "memory.oom_control"):
            with contextlib.suppress(OSError):
                return (self.memory_path / name).read_text()
        return ""

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
        """Remove the group(s) once empty; False if processes are still dying in it."""
        self.kill_all()
        paths = [self.path] + ([self.memory_path] if self.memory_path not in (None, self.path) else [])
        return all([_rmdir(path) for path in paths])


def _rmdir(path: Path) -> bool:
    try:
        path.rmdir()
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


def _v2_parent(controller: str = "pids") -> Path | None:
    own = _own_cgroup("")
    if own is None:
        return None
    for base in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
        here = base / own.lstrip("/")
        try:
            if controller in (here / "cgroup.subtree_control").read_text().split():
                return here
        except OSError:
            continue
    return None


def _v1_memory_parent() -> Path | None:
    own = _own_cgroup("memory")
    base = CGROUP_ROOT / "memory"
    if own is None or not (base / "cgroup.procs").exists():
        return None
    return base / own.lstrip("/")


def _v2_memory_parent(pids_parent: Path) -> Path | None:
    """On v2 the memory group is the pids group itself, if `memory` is delegated there too."""
    memory = _v2_parent("memory")
    return memory if memory == pids_parent else None


def _can_create_below(parent: Path) -> bool:
    probe = parent / f"ghost-probe-{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        log.debug("cannot create cgroups below %s: %s", parent, exc)
        return False
    return True
