"""Run a Python module in a process the kernel kills when its parent dies.

    python -m ghost.llm.deathsig PARENT_PID MODULE [ARGS...]

Ghost starts the bundled model server through this, so that a Ghost killed with SIGKILL (which
runs no cleanup) does not leave the server running. On Linux the death signal is armed with
prctl(PR_SET_PDEATHSIG) before the module starts; it fires when the thread that spawned us
exits, which for Ghost is the event-loop thread, i.e. the process. Elsewhere the module just
runs, and Ghost's normal shutdown is the only guard.

Why not a `preexec_fn`: Python code between fork and exec can deadlock in a process that has
threads, and Ghost has some. Only the standard library is imported here, to start fast.
"""

from __future__ import annotations

import ctypes
import os
import runpy
import signal
import sys

PR_SET_PDEATHSIG = 1


def arm(parent_pid: int) -> None:
    """Die with SIGKILL when the parent dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
    # The parent may have died between our fork and the prctl: then we were already re-parented.
    if os.getppid() != parent_pid:
        raise SystemExit(1)


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit("usage: python -m ghost.llm.deathsig PARENT_PID MODULE [ARGS...]")
    parent_pid, module, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    arm(parent_pid)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
