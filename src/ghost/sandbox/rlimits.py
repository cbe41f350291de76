"""The kernel resource limits a sandbox run gets, and the two ways of applying them."""

from __future__ import annotations

import os
import resource

from ghost.sandbox.base import Limits


def rlimits(limits: Limits, *, nproc: int | None) -> list[tuple[int, tuple[int, int]]]:
    """(resource, (soft, hard)) pairs. `nproc` None leaves RLIMIT_NPROC alone (it is per user)."""
    pairs = [
        # soft: SIGXCPU ends the process (reported as limit "cpu"); hard, a second later: SIGKILL
        (resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1)),
        (resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes)),
        (resource.RLIMIT_FSIZE, (limits.file_size_bytes, limits.file_size_bytes)),
        (resource.RLIMIT_NOFILE, (limits.max_open_files, limits.max_open_files)),
        (resource.RLIMIT_CORE, (0, 0)),
    ]
    if nproc is not None:
        pairs.append((resource.RLIMIT_NPROC, (nproc, nproc)))
    return [(res, _capped(res, soft_hard)) for res, soft_hard in pairs]


def _capped(res: int, wanted: tuple[int, int]) -> tuple[int, int]:
    """Never ask for more than Ghost itself may have: raising a hard limit needs privilege."""
    _, hard = resource.getrlimit(res)
    if hard == resource.RLIM_INFINITY:
        return wanted
    return min(wanted[0], hard), min(wanted[1], hard)


def apply_to(pid: int, pairs: list[tuple[int, tuple[int, int]]]) -> None:
    """Set limits on another, already running process (prlimit(2))."""
    for res, soft_hard in pairs:
        resource.prlimit(pid, res, soft_hard)


def apply_here(pairs: list[tuple[int, tuple[int, int]]]) -> None:
    """Set limits on the calling process (used between fork and exec)."""
    for res, soft_hard in pairs:
        resource.setrlimit(res, soft_hard)


def tasks_of_user(uid: int) -> int:
    """Tasks (threads) the user runs now, counted from /proc: RLIMIT_NPROC's own measure."""
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            count += _threads_if_owned(entry.path, uid)
        except OSError:
            continue  # gone meanwhile
    return count


def _threads_if_owned(proc_dir: str, uid: int) -> int:
    with open(f"{proc_dir}/status", encoding="ascii", errors="replace") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    if int(fields["Uid"].split()[0]) != uid:
        return 0
    return int(fields["Threads"])
