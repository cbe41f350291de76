"""Shared helpers for the bench scripts: start the fake upstream and Ghost, script replies, stats."""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ghost.testing.server import GhostServer, clean_env, free_port  # noqa: E402


class FakeUpstreamProcess:
    """The scripted fake upstream in its own process, so it does not share a GIL with the bench."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ghost.testing.fake_upstream", "--port", str(self.port)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=clean_env())
        assert self.process.stdout is not None
        self.process.stdout.readline()  # prints its URL once it listens

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *replies: dict) -> None:
        httpx.post(self.url + "/_fake/script", json=list(replies)).raise_for_status()

    def reset(self) -> None:
        httpx.post(self.url + "/_fake/reset").raise_for_status()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def bench_client() -> httpx.Client:
    """A sync client with TCP_NODELAY: without it, a request's header and body writes wait on the
    peer's delayed ACK (~40 ms), which would swamp every latency measured here."""
    transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    return httpx.Client(transport=transport, timeout=120)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def table(title: str, header: list[str], rows: list[list[object]]) -> None:
    print(f"\n## {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


__all__ = ["bench_client", "FakeUpstreamProcess", "GhostServer", "percentile", "median", "rss_kb", "table", "json", "os", "time"]
