"""The seccomp filter's tables against the kernel's own headers, and its refusal elsewhere.

The behaviour inside a real sandbox (each listed call fails with EPERM, ordinary programs work) is
tested in test_sandbox_identity.py; this checks the numbers for both architectures, including
the one this machine is not.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from ghost.errors import SandboxError
from ghost.sandbox import seccomp

HEADERS = {
    "x86_64": [Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"), Path("/usr/include/asm/unistd_64.h")],
    "aarch64": [Path("/usr/include/asm-generic/unistd.h")],  # aarch64 uses the generic table
}


def header_numbers(arch: str) -> dict[str, int]:
    header = next((path for path in HEADERS[arch] if path.exists()), None)
    if header is None:
        pytest.skip(f"no kernel header for {arch} here (linux-libc-dev)")
    numbers: dict[str, int] = {}
    for name, value in re.findall(r"#define __NR(?:3264)?_(\w+)\s+(\d+)", header.read_text()):
        numbers.setdefault(name, int(value))
    return numbers


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_the_deny_list_matches_the_kernel_headers(arch: str) -> None:
    known = header_numbers(arch)
    column = {"x86_64": 0, "aarch64": 1}[arch]
    for name, numbers in seccomp.DENIED.items():
        assert numbers[column] == known.get(name), (arch, name, numbers[column], known.get(name))


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_the_program_checks_the_architecture_and_denies_each_listed_call(arch: str) -> None:
    code = [struct.unpack("=HBBI", seccomp.program(arch)[i:i + 8]) for i in range(0, len(seccomp.program(arch)), 8)]
    assert code[0] == (0x20, 0, 0, 4) and code[1][3] in (0xC000003E, 0xC00000B7)  # load arch, compare
    assert code[2] == (0x06, 0, 0, 0x80000000)  # another ABI: kill
    compared = {k for op, _, _, k in code[4:] if op == 0x15}
    assert compared == set(seccomp.denied_numbers(arch))
    assert code[-2] == (0x06, 0, 0, 0x7FFF0000) and code[-1] == (0x06, 0, 0, 0x00050001)  # allow; EPERM
    for index, (op, jt, _, _) in enumerate(code):
        if op == 0x15 and index > 1:
            assert index + 1 + jt == len(code) - 1  # every match lands on the EPERM return


def test_another_architecture_is_refused_clearly() -> None:
    with pytest.raises(SandboxError, match="no seccomp filter for the riscv64 architecture"):
        seccomp.program("riscv64")
