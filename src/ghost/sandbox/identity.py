"""Who sandboxed code is when Ghost runs as root: a dedicated unprivileged user, never root.

Started by root, bubblewrap's user namespace maps the sandbox's uid 0 to the host's uid 0: only
capabilities are dropped, and everything the kernel checks by uid alone (files under /proc/sys,
files on the sandbox directory, setuid bits) still treats the sandbox as root. So when Ghost is
root, every sandbox (`execute`, skills, MCP stdio servers) is started as the `--sandbox-user`
identity instead: bubblewrap itself runs as that uid and gid with no supplementary groups, and
creates an unprivileged user namespace (uid_map `<uid> <uid> 1` seen from the host).

The default user, `ghost-sandbox`, is created at the first start as a system user with its own
group, no home and no login shell, when it does not exist yet. When Ghost runs as an ordinary
user nothing changes: its sandboxes run as that user, as before.

Reaching the sandbox directory: bubblewrap running as the sandbox user resolves the paths it
binds as that user, and Ghost's home (which holds the sandbox directory) is private (0700, owned
by Ghost's user); so may be a Python prefix or an MCP server's program (under /root, say). So
Ghost's child, still root, enters a mount namespace of its own (slave: no mount propagates back
to the host), mounts a small tmpfs on the empty, world-traversable STAGE_DIR, binds the sandbox
directory and those read-only sources into it (`Layout.stage_plan`), checks that the sandbox
directory bound is the one Ghost opened, then drops to the sandbox identity and execs bubblewrap,
which binds them from there. Nothing of Ghost's home becomes reachable by path; the host's mount
table does not change.
"""

from __future__ import annotations

import contextlib
import errno
import ctypes
import logging
import os
import pwd
import resource
import shutil
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ghost.errors import SandboxError

log = logging.getLogger("ghost.sandbox")
DEFAULT_USER = "ghost-sandbox"
# Empty and root-owned on the host; in each sandbox start's own mount namespace the sandbox
# directory is bound here (see the module docstring). Under /run: a tmpfs on most systems.
STAGE_DIR = Path("/run/ghost-sandbox")
USERADD_TIMEOUT_S = 30

_CLONE_NEWNS = 0x00020000
_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_SLAVE = 1 << 19


@dataclass(frozen=True)
class SandboxIdentity:
    uid: int
    gid: int
    name: str

    def describe(self) -> str:
        return f"{self.name} (uid {self.uid}, gid {self.gid})"


def sandbox_identity(setting: str) -> SandboxIdentity | None:
    """The identity sandboxes run as: None when Ghost is not root (they run as Ghost's user).

    `setting` is a user name (created if it is the default and missing), `uid` or `uid:gid`.
    Raises SandboxError saying what is wrong and what to do."""
    if os.geteuid() != 0:
        return None
    identity = _parse(setting.strip() or DEFAULT_USER)
    if identity.uid == 0 or identity.gid == 0:
        raise SandboxError(f"--sandbox-user {setting!r} is root (uid or gid 0); sandboxed code must "
                           "never run as root: name an unprivileged user")
    _prepare_stage_dir()
    return identity


def _parse(setting: str) -> SandboxIdentity:
    if setting.replace(":", "").isdigit():
        uid_text, _, gid_text = setting.partition(":")
        uid = int(uid_text)
        gid = int(gid_text) if gid_text else uid
        with contextlib.suppress(KeyError):
            return SandboxIdentity(uid, gid, pwd.getpwuid(uid).pw_name)
        return SandboxIdentity(uid, gid, f"uid{uid}")
    try:
        entry = pwd.getpwnam(setting)
    except KeyError:
        if setting != DEFAULT_USER:
            raise SandboxError(f"--sandbox-user {setting!r} does not exist; create it (an unprivileged "
                               f"system user) or leave the setting at its default, {DEFAULT_USER!r}, "
                               "which Ghost creates itself") from None
        entry = _create_default_user()
    return SandboxIdentity(entry.pw_uid, entry.pw_gid, entry.pw_name)


def _create_default_user() -> pwd.struct_passwd:
    """`useradd --system` the default user (own group, no home, no shell); another Ghost starting
    at the same moment may win the race, which is fine."""
    useradd = shutil.which("useradd") or shutil.which("useradd", path="/usr/sbin:/sbin")
    if useradd is None:
        raise SandboxError(f"the sandbox user {DEFAULT_USER!r} does not exist and there is no useradd "
                           "to create it; create an unprivileged system user and pass it as --sandbox-user")
    command = [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
               "--shell", "/usr/sbin/nologin", "--comment", "Ghost sandbox", DEFAULT_USER]
    result = subprocess.run(command, capture_output=True, text=True, timeout=USERADD_TIMEOUT_S, check=False)
    try:
        entry = pwd.getpwnam(DEFAULT_USER)
    except KeyError:
        raise SandboxError(f"could not create the sandbox user {DEFAULT_USER!r}: "
                           f"{(result.stderr or result.stdout).strip() or f'useradd exited {result.returncode}'}; "
                           "create an unprivileged system user and pass it as --sandbox-user") from None
    log.warning("created the system user %s (uid %d) that sandboxed code runs as", DEFAULT_USER, entry.pw_uid)
    return entry


def _prepare_stage_dir() -> None:
    try:
        STAGE_DIR.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            STAGE_DIR.mkdir(mode=0o755)
        info = os.lstat(STAGE_DIR)
    except OSError as exc:
        raise SandboxError(f"cannot create {STAGE_DIR} (where each sandbox start mounts the sandbox "
                           f"folder privately): {exc.strerror}") from exc
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
        raise SandboxError(f"{STAGE_DIR} must be a folder owned by root and writable only by root")
    if stat.S_IMODE(info.st_mode) != 0o755:
        os.chmod(STAGE_DIR, 0o755)


def staged(index: int) -> Path:
    """Where the index-th source of a stage plan is bound (index 0: the sandbox directory)."""
    return STAGE_DIR / ("sandbox" if index == 0 else f"ro-{index}")


def become(identity: SandboxIdentity, plan: list[Path], root_fd: int,
           limits: list[tuple[int, tuple[int, int]]]) -> Callable[[], None]:
    """The function a sandbox start runs in its child (root) between fork and exec of bubblewrap:
    in a private mount namespace, bind each host path of `plan` (the sandbox directory first) on
    `staged(i)`, then become the sandbox identity for good (real, effective and saved ids; no
    supplementary groups) with `limits` (rlimit pairs) set, which bubblewrap and the sandbox inherit.

    The binds take paths (a mount from another namespace, as `root_fd` is once the child has its
    own, cannot be bound); then what landed on `staged(0)` must be the directory Ghost opened as
    `root_fd`: were the path swapped meanwhile, the start fails instead."""
    binds = [(os.fsencode(source), os.fsencode(staged(index)), os.path.isdir(source))
             for index, source in enumerate(plan)]
    stage = os.fsencode(STAGE_DIR)
    opened = os.fstat(root_fd)
    uid, gid = identity.uid, identity.gid

    def enter() -> None:
        _libc_call("unshare", _LIBC.unshare(_CLONE_NEWNS))
        _libc_call("make / a slave", _LIBC.mount(None, b"/", None, _MS_REC | _MS_SLAVE, None))
        _libc_call("stage tmpfs", _LIBC.mount(b"tmpfs", stage, b"tmpfs", _MS_NOSUID | _MS_NODEV,
                                              b"mode=0755,size=65536"))
        for source, target, is_dir in binds:
            if is_dir:
                os.mkdir(target, 0o755)
            else:
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            _libc_call("bind", _LIBC.mount(source, target, None, _MS_BIND | _MS_REC, None))
        bound = os.stat(binds[0][1])
        if (bound.st_dev, bound.st_ino) != (opened.st_dev, opened.st_ino):
            raise OSError(errno.ESTALE, "the sandbox folder was replaced while a sandbox started")
        for res, soft_hard in limits:
            resource.setrlimit(res, soft_hard)
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)

    return enter


def _libc_call(what: str, result: int) -> None:
    if result != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {os.strerror(number)}")


_LIBC = ctypes.CDLL(None, use_errno=True)
