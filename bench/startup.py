"""`ghost serve` start-up: wall time to its first answer and the CPU its process spent getting there,
as shipped vs with the MCP SDK imported at start (what every Ghost paid before the SDK was imported
only when MCP is used), interleaved. The test suite starts ~120 Ghosts, so this is CI time too.

    .venv/bin/python bench/startup.py [--rounds 6]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import FakeUpstreamProcess, GhostServer, Targets, median, table

# The SDK modules Ghost's MCP code imports (client, server, types), imported before Ghost starts.
WITH_MCP = """
import sys
import mcp, mcp.client.streamable_http, mcp.server.lowlevel, mcp.server.streamable_http_manager, mcp_types
from ghost.cli import main
sys.exit(main(sys.argv[1:]))
"""
SAVED_CPU_TARGET_S = 0.4


class Variant(GhostServer):
    def __init__(self, *args: str, preload: str | None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.preload = preload

    def command(self) -> list[str]:
        ghost = super().command()
        return ghost if self.preload is None else [sys.executable, "-c", self.preload, *ghost[3:]]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process itself (its threads, not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_start(upstream: str, preload: str | None) -> tuple[float, float]:
    server = Variant("--upstream-url", upstream, preload=preload, home=Path(tempfile.mkdtemp(prefix="ghost-bench-")))
    started = time.perf_counter()
    server.start()
    wall = time.perf_counter() - started
    assert server.process is not None
    cpu = cpu_seconds(server.process.pid)
    server.stop()
    return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    upstream = FakeUpstreamProcess()
    results: dict[str, tuple[list[float], list[float]]] = {"as shipped": ([], []), "MCP SDK imported at start": ([], [])}
    try:
        one_start(upstream.url, None)  # warm the file cache for both
        for _ in range(args.rounds):
            for name, preload in (("as shipped", None), ("MCP SDK imported at start", WITH_MCP)):
                wall, cpu = one_start(upstream.url, preload)
                results[name][0].append(wall)
                results[name][1].append(cpu)
    finally:
        upstream.stop()
    load = os.getloadavg()[0]
    rows = [[name, f"{median(walls):.2f} s", f"{median(cpus):.2f} s", f"{min(cpus):.2f} s"]
            for name, (walls, cpus) in results.items()]
    table(f"ghost serve start-up, median of {args.rounds} (load average {load:.1f})",
          ["", "wall to first answer", "CPU of its process", "CPU, least"], rows)
    saved = median(results["MCP SDK imported at start"][1]) - median(results["as shipped"][1])
    targets = Targets("bench/startup.py")
    targets.check(saved >= SAVED_CPU_TARGET_S, f"CPU saved per start: {saved:.2f} s", f">= {SAVED_CPU_TARGET_S} s")
    return targets.finish()


if __name__ == "__main__":
    sys.exit(main())
