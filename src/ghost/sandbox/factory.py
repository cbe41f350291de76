"""Pick and build the sandbox backend at start: bubblewrap, or no sandboxed execution at all.

`auto` and `bwrap` both mean bubblewrap. If it cannot run, `auto` keeps Ghost serving with an
executor that refuses every run with the reason (never the unisolated process backend), and
`bwrap` stops the start. The process backend runs only when chosen explicitly.

Python inside the sandbox: /usr/bin/python3 when the host has it (it is inside the read-only
/usr mount, so nothing extra is exposed), else the interpreter Ghost's own Python is based on
(`sys.base_prefix`, never Ghost's virtualenv), its prefix mounted read-only. The
`sandbox_python` setting names another interpreter; its prefixes are asked of it and mounted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ghost.config import Settings
from ghost.errors import SandboxError
from ghost.sandbox.base import Executor, Limits
from ghost.sandbox.bwrap import BwrapExecutor
from ghost.sandbox.cgroup import PidsCgroups
from ghost.sandbox.env import sandbox_env
from ghost.sandbox.layout import OPTIONAL_OPTIONS, SANDBOX_MOUNT, TMP_MOUNT, Layout
from ghost.sandbox import fs
from ghost.sandbox.identity import SandboxIdentity, sandbox_identity
from ghost.sandbox.process import ProcessExecutor
from ghost.sandbox.root import give_tree, prepare_sandbox_root
from ghost.sandbox.unavailable import UnavailableExecutor

log = logging.getLogger("ghost.sandbox")
SYSTEM_PYTHON = Path("/usr/bin/python3")


@dataclass(frozen=True)
class PythonSetup:
    path: str
    prefixes: tuple[Path, ...]  # directories the interpreter needs, to mount read-only


async def find_python(setting: str) -> PythonSetup:
    if setting:
        return await _ask_interpreter(setting)
    if SYSTEM_PYTHON.exists():
        return PythonSetup(str(SYSTEM_PYTHON), ())
    base = Path(sys.base_prefix)
    return PythonSetup(str(base / "bin" / f"python{sys.version_info.major}"), (base,))


async def _ask_interpreter(path: str) -> PythonSetup:
    probe = "import sys; print(sys.prefix); print(sys.base_prefix)"
    try:
        process = await asyncio.create_subprocess_exec(
            path, "-I", "-c", probe, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin"})
        out, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    except (OSError, TimeoutError) as exc:
        raise SandboxError(f"sandbox_python {path!r} cannot be run: {exc}") from exc
    if process.returncode != 0:
        raise SandboxError(f"sandbox_python {path!r} exited with {process.returncode}")
    prefixes = tuple(dict.fromkeys(Path(line) for line in out.decode().split()))
    return PythonSetup(path, prefixes)


def find_bash() -> str:
    return "/bin/bash" if Path("/bin/bash").exists() else "/bin/sh"


async def make_executor(settings: Settings, sandbox_root: Path, *, warm: bool = True) -> Executor:
    """The configured backend, checked by running Python in it once. `warm=False` turns off
    the bubblewrap backend's sandbox started ahead of time (for measuring a cold start)."""
    limits = Limits.from_settings(settings)
    python = await find_python(settings.sandbox_python)
    cgroups = await asyncio.to_thread(_cgroups) if not settings.sandbox_no_pids_cgroup else None
    if settings.sandbox_backend == "process":
        await asyncio.to_thread(prepare_sandbox_root, sandbox_root)
        return await _checked(_process(settings, sandbox_root, python, limits, cgroups))
    try:
        identity = await asyncio.to_thread(sandbox_identity, settings.sandbox_user)
        fs.set_owner((identity.uid, identity.gid) if identity is not None else None)
        await asyncio.to_thread(_prepare_root_at_start, sandbox_root)
        return await _checked(await _bwrap(settings, sandbox_root, python, limits, cgroups, warm, identity))
    except SandboxError as exc:
        reason = exc.message + _hint(identity_wanted=os.geteuid() == 0)
        if settings.sandbox_backend == "bwrap":
            # One plain line before uvicorn's traceback, saying what to do.
            log.error("sandbox_backend is 'bwrap' but bubblewrap cannot run here (%s); Ghost will "
                      "not start. Fix bubblewrap (see docs/sandbox.md).", reason)
            raise
        log.error("!!! bubblewrap cannot run here (%s). Ghost serves, but execute, skills and sandboxed "
                  "MCP servers are REFUSED until bubblewrap works (see docs/sandbox.md); the unisolated "
                  "process backend runs only if chosen with --sandbox-backend process. !!!", reason)
        return UnavailableExecutor(reason, limits, python=python.path, bash=find_bash())


def _prepare_root_at_start(sandbox_root: Path) -> None:
    """Owner and mode of the sandbox root; on the first start as a sandbox identity (the root is
    not its yet), what older versions left there, root's, is given to it as well — nothing
    sandboxed runs yet, so nothing can race the walk."""
    owner = fs.owner()
    if owner is not None and sandbox_root.exists():
        info = os.lstat(sandbox_root)
        if (info.st_uid, info.st_gid) != owner:
            if len(sandbox_root.parts) <= 2:  # "/", "/srv", "/home": never hand a system folder over
                raise SandboxError(f"the sandbox folder {sandbox_root} is a top-level system folder; "
                                   "Ghost will not give it to the sandbox user: choose --sandbox-dir below it")
            give_tree(sandbox_root)
    prepare_sandbox_root(sandbox_root)


def _hint(*, identity_wanted: bool) -> str:
    """What blocks unprivileged user namespaces here, if one of the known switches does."""
    def read(path: str) -> str:
        try:
            return Path(path).read_text().strip()
        except OSError:
            return ""

    who = "the sandbox user" if identity_wanted else "Ghost's user"
    if read("/proc/sys/user/max_user_namespaces") == "0":
        return (f". User namespaces are switched off (user.max_user_namespaces = 0), so bubblewrap cannot "
                f"run as {who}: set it to a positive number (sysctl -w user.max_user_namespaces=10000)")
    if read("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        return (f". Unprivileged user namespaces are switched off (kernel.unprivileged_userns_clone = 0), "
                f"so bubblewrap cannot run as {who}: sysctl -w kernel.unprivileged_userns_clone=1")
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
        return (f". AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_"
                f"userns = 1), so bubblewrap cannot run as {who}: install an AppArmor profile that allows "
                "userns for /usr/bin/bwrap (see docs/sandbox.md)")
    return ""


def _cgroups() -> PidsCgroups | None:
    cgroups = PidsCgroups.discover()
    if cgroups is not None:
        cgroups.sweep_stale()
    return cgroups


async def _bwrap(settings: Settings, root: Path, python: PythonSetup, limits: Limits,
                 cgroups: PidsCgroups | None, warm: bool, identity: SandboxIdentity | None) -> Executor:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxError("the bwrap command is not installed")
    features = await _bwrap_options(bwrap)
    for option, cost in OPTIONAL_OPTIONS.items():
        if option not in features:
            log.warning("this bubblewrap has no %s option (it is older than 0.8): %s", option, cost)
    layout = Layout(sandbox_root=root, hidden=settings.home, extra_ro=python.prefixes,
                    network=settings.sandbox_network, tmp_bytes=settings.sandbox_tmp_bytes,
                    env=sandbox_env(home=TMP_MOUNT, tmp=TMP_MOUNT), features=features, identity=identity)
    return BwrapExecutor(bwrap, layout, python.path, find_bash(), limits,
                         settings.sandbox_max_concurrent, cgroups, warm=warm)


async def _bwrap_options(bwrap: str) -> frozenset[str]:
    """The options this bwrap lists in its --help."""
    try:
        process = await asyncio.create_subprocess_exec(
            bwrap, "--help", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={"PATH": "/usr/bin:/bin"})
        out, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    except (OSError, TimeoutError) as exc:
        raise SandboxError(f"cannot run {bwrap}: {exc}") from exc
    return frozenset(re.findall(r"--[a-z0-9-]+", out.decode("utf-8", "replace")))


def _process(settings: Settings, root: Path, python: PythonSetup, limits: Limits,
             cgroups: PidsCgroups | None) -> Executor:
    tmp = settings.home / "sandbox-tmp"
    tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp.chmod(0o700)
    return ProcessExecutor(root, tmp, python.path, find_bash(), limits, settings.sandbox_max_concurrent,
                           cgroups)


async def _checked(executor: Executor) -> Executor:
    try:
        result = await executor.run([executor.python, "-c", "print('ok')"])
    except BaseException:
        await executor.aclose()  # nothing of a backend that cannot run is left behind
        raise
    if result.exit_code != 0 or result.stdout.strip() != "ok":
        await executor.aclose()
        raise SandboxError(f"the {executor.name} backend cannot run Python: exit {result.exit_code}, "
                           f"{(result.stderr or result.stdout).strip()[:500]}")
    if not executor.isolated:
        log.warning("!!! the sandbox backend is %r, which does NOT isolate: code the model runs has "
                    "Ghost's user's rights, can read Ghost's database and files, and has the "
                    "network. Install bubblewrap (see docs/sandbox.md). !!!", executor.name)
    if executor.info().get("process_limit") == "none":
        log.warning("!!! the sandbox's process limit is NOT enforced: Ghost runs as root and cannot "
                    "create a pids cgroup, so a fork bomb in the sandbox can exhaust the host's "
                    "process table. Run Ghost as an ordinary user. !!!")
    if executor.info().get("run_memory_limit") != "cgroup":
        log.warning("no memory cgroup for sandbox runs here: only the per-process limits apply "
                    "(--sandbox-memory-bytes per process, --sandbox-max-processes processes), so one "
                    "run may use up to their product")
    log.info("sandbox backend %s (isolated: %s), working directory %s", executor.name,
             executor.isolated, SANDBOX_MOUNT if executor.isolated else "the sandbox directory")
    return executor
