"""The seccomp filter every bubblewrap sandbox gets (`bwrap --seccomp FD`): system calls a
sandbox never needs fail with EPERM.

A classic BPF program over `struct seccomp_data`, built here (a few dozen instructions; no
library needed): check the architecture, then compare the call number against the deny list.
The list and why each entry is on it are in docs/security.md; DENIED below is the source.

Architectures: x86_64 and aarch64 (their numbers are below). A call made through another ABI
of the same CPU (32-bit x86 `int 0x80`, x32) would carry different numbers, so such calls kill
the process instead of slipping past the list. On any other architecture `program()` raises
SandboxError and Ghost refuses to start sandboxes, saying so.
"""

from __future__ import annotations

import errno
import platform
import struct

from ghost.errors import SandboxError

# name: (x86_64 number, aarch64 number); None where the call does not exist on that architecture.
DENIED: dict[str, tuple[int | None, int | None]] = {
    # the kernel keyring: shared across the host, a classic way out of containers
    "add_key": (248, 217), "request_key": (249, 218), "keyctl": (250, 219),
    # other processes' memory
    "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271),
    # the mount family and namespaces: the sandbox's filesystem view is fixed by bubblewrap
    "mount": (165, 40), "umount2": (166, 39), "pivot_root": (155, 41), "chroot": (161, 51),
    "open_tree": (428, 428), "move_mount": (429, 429), "fsopen": (430, 430), "fsconfig": (431, 431),
    "fsmount": (432, 432), "fspick": (433, 433), "mount_setattr": (442, 442),
    "unshare": (272, 97), "setns": (308, 268),
    # kernel attack surface no program here needs
    "bpf": (321, 280), "perf_event_open": (298, 241), "userfaultfd": (323, 282),
    "io_uring_setup": (425, 425), "io_uring_enter": (426, 426), "io_uring_register": (427, 427),
    "init_module": (175, 105), "finit_module": (313, 273), "delete_module": (176, 106),
    "kexec_load": (246, 104), "kexec_file_load": (320, 294),
    "open_by_handle_at": (304, 265), "lookup_dcookie": (212, 18), "fanotify_init": (300, 262),
    # host administration
    "swapon": (167, 224), "swapoff": (168, 225), "reboot": (169, 142), "acct": (163, 89),
    "quotactl": (179, 60), "quotactl_fd": (443, 443), "syslog": (103, 116),
    "iopl": (172, None), "ioperm": (173, None),
}

_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_COLUMN = {"x86_64": 0, "aarch64": 1}
_X32_BIT = 0x40000000  # x86_64 syscalls with this bit set use the x32 ABI

# BPF opcodes and seccomp return values (linux/filter.h, linux/seccomp.h).
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL_PROCESS = 0x80000000
_OFFSET_NR = 0  # struct seccomp_data: int nr; __u32 arch; ...
_OFFSET_ARCH = 4


def machine() -> str:
    return platform.machine().lower().replace("arm64", "aarch64").replace("amd64", "x86_64")


def denied_numbers(arch: str) -> list[int]:
    column = _COLUMN[arch]
    return sorted({numbers[column] for numbers in DENIED.values() if numbers[column] is not None})  # type: ignore[misc]


def program(arch: str | None = None) -> bytes:
    """The filter as bwrap reads it: an array of `struct sock_filter` in native byte order."""
    arch = arch or machine()
    if arch not in _AUDIT_ARCH:
        raise SandboxError(f"no seccomp filter for the {arch} architecture (Ghost has one for "
                           f"{', '.join(_AUDIT_ARCH)}), so sandboxes cannot be started safely here")
    numbers = denied_numbers(arch)
    code: list[tuple[int, int, int, int]] = [
        (_LD_W_ABS, 0, 0, _OFFSET_ARCH),
        (_JEQ_K, 1, 0, _AUDIT_ARCH[arch]),
        (_RET_K, 0, 0, _RET_KILL_PROCESS),  # another ABI: other numbers, so no call gets through
        (_LD_W_ABS, 0, 0, _OFFSET_NR),
    ]
    if arch == "x86_64":
        code.append((_JGE_K, len(numbers) + 1, 0, _X32_BIT))  # to the EPERM return below
    for index, number in enumerate(numbers):
        code.append((_JEQ_K, len(numbers) - index, 0, number))  # jump over the rest and ALLOW
    code.append((_RET_K, 0, 0, _RET_ALLOW))
    code.append((_RET_K, 0, 0, _RET_ERRNO | errno.EPERM))
    return b"".join(struct.pack("=HBBI", op, jt, jf, k) for op, jt, jf, k in code)
