"""What a bubblewrap sandbox sees: the mounts, built from the host as it is.

Inside, the command finds: the system read-only (/usr and the /bin, /lib... entries beside it,
and a short list of /etc files programs need), the Python interpreter's prefix read-only when
it lives outside /usr, a private /proc and /dev, a private memory-backed /tmp of bounded size,
and the sandbox directory — the only writable place — at /sandbox, its working directory.

Nothing else of the host is mounted. In particular Ghost's home (database, logs, settings) is
not, and if it lies under a system directory that is mounted, an empty tmpfs is put over it.
The kernel's settings under /proc/sys (and /proc/sysrq-trigger, /proc/irq, /proc/bus) are
mounted read-only over the private /proc: bubblewrap leaves them writable inside a user
namespace, where the kernel's uid checks alone guard them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ghost.errors import SandboxError
from ghost.sandbox.identity import SandboxIdentity, staged
from ghost.sandbox.paths import is_within

SANDBOX_MOUNT = "/sandbox"
TMP_MOUNT = "/tmp"
ROOT_ENTRIES = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
ETC_ENTRIES = (
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "ssl",
    "ca-certificates", "ca-certificates.conf", "mime.types", "nsswitch.conf",
)
OPTIONAL_OPTIONS = {
    "--disable-userns": "sandboxed code may create nested user namespaces",
    "--size": "the sandbox's /tmp and /dev/shm are not bounded in size",
}
ETC_NETWORK_ENTRIES = ("hosts", "resolv.conf", "host.conf", "protocols", "services", "gai.conf")
# Kernel interfaces in /proc covered read-only (those the host lacks are skipped).
PROC_READ_ONLY = ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus")


@dataclass(frozen=True)
class Layout:
    sandbox_root: Path  # host directory mounted writable at /sandbox
    hidden: Path  # host directory that must stay invisible (Ghost's home)
    extra_ro: tuple[Path, ...] = ()  # e.g. the Python prefix when it is outside /usr
    network: bool = False
    tmp_bytes: int = 64 * 1024 * 1024
    env: dict[str, str] = field(default_factory=dict)
    # The options this bwrap knows (from its --help); None: assume a current one. Older versions
    # lack OPTIONAL_OPTIONS, which are then left out (the factory logs what that costs).
    features: frozenset[str] | None = None
    # When Ghost is root: who the sandbox runs as. The sandbox directory then reaches bubblewrap
    # through STAGE_DIR (see ghost.sandbox.identity), not by its path in Ghost's private home.
    identity: SandboxIdentity | None = None

    def args(self) -> list[str]:
        """bwrap options (without the command) for this layout."""
        binds = self._system_binds()
        self._check_hidden(binds)
        args = ["--unshare-all", "--unshare-user", *self._if_known("--disable-userns"), "--die-with-parent",
                "--new-session", "--cap-drop", "ALL", "--hostname", "sandbox"]
        if self.network:
            args.append("--share-net")
        # The private filesystems first, so that a read-only bind below one of them (a Python
        # prefix under /tmp) lands on top instead of being hidden. /dev is a writable tmpfs of
        # its own: read-only it is (device nodes still work), with a bounded /dev/shm like /tmp.
        size = self._if_known("--size", str(self.tmp_bytes))
        args += ["--proc", "/proc"]
        for path in PROC_READ_ONLY:
            args += ["--ro-bind-try", path, path]
        args += ["--dev", "/dev", *size, "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
                 *size, "--tmpfs", TMP_MOUNT]
        plan = self.stage_plan()
        for source, target in binds:
            if source in plan:  # reached through the stage (see ghost.sandbox.identity)
                source = staged(plan.index(source))
            args += ["--ro-bind", str(source), target]
        args += self._root_symlinks()
        args += self._masks(binds)
        source = staged(0) if self.identity is not None else self.sandbox_root
        args += ["--bind", str(source), SANDBOX_MOUNT, "--chdir", SANDBOX_MOUNT,
                 "--remount-ro", "/", "--clearenv"]  # "/" is bwrap's own tmpfs: no writing there either
        for name, value in self.env.items():
            args += ["--setenv", name, value]
        return args

    def stage_plan(self) -> list[Path]:
        """With a sandbox identity: the host paths bubblewrap reaches through the stage, which
        it might not reach as the sandbox user — the sandbox directory first, then the extra
        read-only mounts (a Python prefix, an MCP server's program). Empty without one."""
        if self.identity is None:
            return []
        system = [(source, target) for source, target in self._system_binds() if source not in self.extra_ro]
        return [self.sandbox_root, *[path for path in dict.fromkeys(self.extra_ro) if not _covered(path, system)]]

    def _if_known(self, option: str, *values: str) -> list[str]:
        return [option, *values] if self.features is None or option in self.features else []

    def _system_binds(self) -> list[tuple[Path, str]]:
        binds = [(Path("/usr"), "/usr")]
        binds += [(Path("/", name), f"/{name}") for name in ROOT_ENTRIES
                  if Path("/", name).is_dir() and not Path("/", name).is_symlink()]
        etc = ETC_ENTRIES + (ETC_NETWORK_ENTRIES if self.network else ())
        binds += [(Path("/etc", name), f"/etc/{name}") for name in etc if Path("/etc", name).exists()]
        binds += [(path, str(path)) for path in self.extra_ro if not _covered(path, binds)]
        return binds

    def _root_symlinks(self) -> list[str]:
        # Merged-/usr systems have /bin -> usr/bin etc.; recreate the links, not their targets.
        args: list[str] = []
        for name in ROOT_ENTRIES:
            entry = Path("/", name)
            if entry.is_symlink():
                args += ["--symlink", os.readlink(entry), f"/{name}"]
        return args

    def _check_hidden(self, binds: list[tuple[Path, str]]) -> None:
        hidden = Path(os.path.realpath(self.hidden))
        for source, _ in binds:
            if is_within(Path(os.path.realpath(source)), hidden):
                raise SandboxError(f"{source} would be mounted into the sandbox but lies inside "
                                   f"Ghost's home {hidden}; move one of them")

    def _masks(self, binds: list[tuple[Path, str]]) -> list[str]:
        hidden = Path(os.path.realpath(self.hidden))
        mounted_over = any(is_within(hidden, Path(os.path.realpath(src))) for src, _ in binds)
        return [*self._if_known("--size", "4096"), "--tmpfs", str(hidden)] if mounted_over else []


def _covered(path: Path, binds: list[tuple[Path, str]]) -> bool:
    return any(is_within(path, source) for source, _ in binds)
