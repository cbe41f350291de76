"""Benchmark: a save of a sandbox holding sparse files (issue 21).

40 sparse files of 256 MiB (10 GiB of apparent size, nothing on disk) in a sandbox, saved with
`build_archive` as Ghost's save route runs it, in the same run:

  * with the default cap (500 MiB): refused by the apparent-size count before any file is read
    (today's behaviour);
  * with a cap above 10 GiB: every file read whole — what any save cost before the apparent
    sizes were counted (the archive of zeros stays small, so the old cap, on archive bytes, never
    tripped: a save read all 10 GiB, 64 s on a quiet machine).

Prints wall time and the bytes the process read (/proc/self/io rchar) for each, with the load
average beside them.  Run:  python bench/save_sparse.py [--files N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from ghost.errors import LimitExceeded
from ghost.workspace.build import build_archive
from ghost.workspace.tasks import StopFlag

MiB = 1024 * 1024


def rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def one_save(root: Path, tmp: Path, cap: int) -> tuple[str, float, int]:
    before, started = rchar(), time.perf_counter()
    try:
        built = build_archive(root, tmp, b"{}", cap, StopFlag())
        built.file.close()
        outcome = f"saved ({built.size // 1024} KiB archive)"
    except LimitExceeded:
        outcome = "refused (413)"
    return outcome, time.perf_counter() - started, rchar() - before


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ghost-bench-sparse-") as folder:
        root, tmp = Path(folder) / "sandbox", Path(folder) / "tmp"
        root.mkdir()
        tmp.mkdir()
        for number in range(args.files):
            with open(root / f"sparse-{number:02}.bin", "wb") as handle:
                handle.truncate(256 * MiB)
        print(f"{args.files} sparse files of 256 MiB; load average {os.getloadavg()[0]:.1f}")
        print("| cap | outcome | seconds | bytes read |\n|---|---|---|---|")
        for label, cap in (("500 MiB (default)", 500 * MiB), ("16 GiB (every file read)", 16 * 1024 * MiB)):
            outcome, seconds, read = one_save(root, tmp, cap)
            print(f"| {label} | {outcome} | {seconds:.2f} | {read / MiB:,.1f} MiB |", flush=True)
        print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
