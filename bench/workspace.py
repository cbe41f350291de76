"""Benchmark: workspace save/load, upload and download through a real Ghost.

Builds a ~200 MB workspace (2,000 small source-like files plus a few large ones: a log, a CSV, a
random binary), then measures in the same run:

  * save through Ghost vs `zip -r` (default level 6) of the same tree, and load through Ghost vs
    `unzip` of zip's archive — wall time, and the ratio (target: Ghost >= 0.7x zip's speed);
  * Ghost's peak RSS growth during save, load, a 100 MB upload and a 100 MB download (VmHWM,
    reset through /proc/<pid>/clear_refs before each step, minus VmRSS before it; target <= 64 MB);
  * /api/version latency while a save runs (p50/p99/max; target p99 <= 50 ms).

Run:  python bench/workspace.py [--repeat N] [--keep]
Only loopback traffic; everything lives in a temp folder that is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from _common import Targets

from ghost.testing.server import GhostServer

MB = 1024 * 1024
WORDS = ("def class return import self value result data index count items config path file "
         "error while for if else try except with open read write json list dict string int "
         "float none true false async await yield lambda print format range len append").split()


# --- the workspace -------------------------------------------------------------------------------
def source_text(rng: random.Random, size: int) -> bytes:
    lines, total = [], 0
    while total < size:
        indent = "    " * rng.randint(0, 3)
        line = indent + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
        line += f"  # {rng.randint(0, 99999)}\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()[:size]


def make_workspace(root: Path) -> int:
    rng = random.Random(42)
    root.mkdir(parents=True)
    for i in range(2000):
        folder = root / f"project{i % 20}" / f"module{i % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"file{i}.py").write_bytes(source_text(rng, rng.randint(8_000, 40_000)))
    with open(root / "server.log", "wb") as out:
        for _ in range(60):
            out.write(source_text(rng, MB))
    with open(root / "measurements.csv", "wb") as out:
        for _ in range(45):
            rows = "".join(f"{rng.random():.6f},{rng.randint(0, 10**6)},{rng.choice(WORDS)}\n" for _ in range(40_000))
            out.write(rows.encode()[:MB])
    with open(root / "model.bin", "wb") as out:
        for _ in range(40):
            out.write(os.urandom(MB))
    skills = root / "acquired_skills"
    skills.mkdir()
    for name in ("fetch", "plot", "summarise"):
        (skills / f"{name}.py").write_bytes(source_text(rng, 4000))
        (skills / f"{name}.json").write_text(f'{{"name": "{name}"}}')
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


# --- measuring -----------------------------------------------------------------------------------
def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def rss_growth_mb(pid: int, step: Callable[[], object]) -> tuple[float, object]:
    """Peak RSS growth of process `pid` while `step` runs (VmHWM after a reset, minus VmRSS before)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = status_kb(pid, "VmRSS")
    result = step()
    return (status_kb(pid, "VmHWM") - before) / 1024, result


def timed(step: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = step()
    return time.perf_counter() - started, result


def run(cmd: list[str], cwd: Path) -> None:
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


# --- Ghost operations ----------------------------------------------------------------------------
def ghost_save(client: httpx.Client, target: Path) -> int:
    with client.stream("POST", "/api/workspace/save") as response, open(target, "wb") as out:
        response.raise_for_status()
        for chunk in response.iter_bytes(1 << 20):
            out.write(chunk)
    return target.stat().st_size


def ghost_load(client: httpx.Client, archive: Path) -> None:
    with open(archive, "rb") as body:
        response = client.post("/api/workspace/load", content=body, headers={"content-type": "application/zip"})
    response.raise_for_status()


def ghost_upload(client: httpx.Client, source: Path) -> None:
    with open(source, "rb") as body:
        client.post("/api/upload", files={"file": ("upload.bin", body)}).raise_for_status()


def ghost_download(client: httpx.Client, name: str) -> None:
    with client.stream("GET", f"/api/download/{name}") as response:
        response.raise_for_status()
        for _ in response.iter_bytes(1 << 20):
            pass


def version_latencies_during(ghost: GhostServer, step: Callable[[], object]) -> list[float]:
    latencies: list[float] = []
    done = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=ghost.url, timeout=30) as client:
            while not done.is_set():
                started = time.perf_counter()
                client.get("/api/version").raise_for_status()
                latencies.append(time.perf_counter() - started)
                time.sleep(0.005)

    thread = threading.Thread(target=probe)
    thread.start()
    try:
        step()
    finally:
        done.set()
        thread.join()
    return latencies


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# --- the run -------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds; the best of each counts")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = parser.parse_args()
    for tool in ("zip", "unzip"):
        if shutil.which(tool) is None:
            sys.exit(f"bench needs `{tool}` on PATH")
    work = Path(tempfile.mkdtemp(prefix="ghost-bench-ws-"))
    try:
        return bench(work, args.repeat)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def bench(work: Path, repeat: int) -> int:
    home = work / "home"
    sandbox = home / "sandbox"
    size = make_workspace(sandbox)
    print(f"workspace: {size / MB:.0f} MB in {sum(1 for p in sandbox.rglob('*') if p.is_file())} files")
    zip_path, unzip_dir, saved = work / "zip.zip", work / "unzipped", work / "ghost.zip"

    # The archive is bigger than the default 100 MB upload cap; the benchmark raises it.
    ghost = GhostServer("--upload-max-bytes", str(400 * MB), home=home).start()
    try:
        assert ghost.process is not None
        pid = ghost.process.pid
        with httpx.Client(base_url=ghost.url, headers=ghost.headers, timeout=300) as client:
            # Each round runs the tool and Ghost back to back, so a busy machine hits both alike;
            # the best round of each counts.
            times: dict[str, list[float]] = {"zip": [], "save": [], "unzip": [], "load": []}
            for _ in range(repeat):
                zip_path.unlink(missing_ok=True)
                times["zip"].append(timed(lambda: run(["zip", "-r", "-q", str(zip_path), "."], sandbox))[0])
                times["save"].append(timed(lambda: ghost_save(client, saved))[0])
                shutil.rmtree(unzip_dir, ignore_errors=True)
                times["unzip"].append(timed(lambda: run(["unzip", "-q", str(zip_path), "-d", str(unzip_dir)], work))[0])
                times["load"].append(timed(lambda: ghost_load(client, saved))[0])
            shutil.rmtree(unzip_dir, ignore_errors=True)
            best = {name: min(values) for name, values in times.items()}
            ghost_size = saved.stat().st_size / MB

            save_rss, _ = rss_growth_mb(pid, lambda: ghost_save(client, saved))
            load_rss, _ = rss_growth_mb(pid, lambda: ghost_load(client, saved))
            latencies = version_latencies_during(ghost, lambda: ghost_save(client, saved))
            big = work / "upload.bin"
            big.write_bytes(os.urandom(100 * MB))
            upload_s, _ = timed(lambda: ghost_upload(client, big))
            upload_rss, _ = rss_growth_mb(pid, lambda: ghost_upload(client, big))
            download_s, _ = timed(lambda: ghost_download(client, "upload.bin"))
            download_rss, _ = rss_growth_mb(pid, lambda: ghost_download(client, "upload.bin"))
    finally:
        ghost.stop()

    zip_ratio, unzip_ratio = best["zip"] / best["save"], best["unzip"] / best["load"]
    targets = Targets("bench/workspace.py")
    verdict = targets.cell
    rows = [
        ("save: zip -r (level 6)", f"{best['zip']:.2f} s", f"{zip_path.stat().st_size / MB:.0f} MB archive", ""),
        ("save: Ghost", f"{best['save']:.2f} s", f"{ghost_size:.0f} MB archive",
         verdict(zip_ratio >= 0.7, f"{zip_ratio:.2f}x zip's speed")),
        ("load: unzip", f"{best['unzip']:.2f} s", "", ""),
        ("load: Ghost (upload+check+unpack+swap)", f"{best['load']:.2f} s", "",
         verdict(unzip_ratio >= 0.7, f"{unzip_ratio:.2f}x unzip's speed")),
        ("upload 100 MB", f"{upload_s:.2f} s", "", ""),
        ("download 100 MB", f"{download_s:.2f} s", "", ""),
    ]
    for name, growth in (("save", save_rss), ("load", load_rss), ("upload 100 MB", upload_rss),
                         ("download 100 MB", download_rss)):
        rows.append((f"RSS growth: {name}", f"{growth:.1f} MB", "", verdict(growth <= 64, "<= 64 MB")))
    p99 = percentile(latencies, 99) * 1000
    rows.append(("/api/version during save", f"p99 {p99:.1f} ms",
                 f"p50 {percentile(latencies, 50) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms, "
                 f"n={len(latencies)}", verdict(p99 <= 50, "p99 <= 50 ms")))
    print_table(rows)
    print("rounds (s): " + "; ".join(f"{k} " + ", ".join(f"{v:.2f}" for v in vs) for k, vs in times.items()))
    return targets.finish()


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    header = ("step", "result", "detail", "target")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    raise SystemExit(main())
