"""Shared helpers for the bench scripts: start the fake upstream and Ghost, script replies, stats."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ghost.testing.server import GhostServer, clean_env, free_port  # noqa: E402
from ghost.config import Settings  # noqa: E402
from ghost.tools.setup import Toolbox, start_tools  # noqa: E402
from ghost.workspace.service import Workspace, open_workspace  # noqa: E402


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


def rss_kb(pid: int, field_name: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


# --- a minimal HTTP/1.1 keep-alive client, timing a reply's first body chunk and its end ----------------


def request_head(method: str, path: str, length: int, key: str, headers: dict[str, str] | None = None) -> bytes:
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Ghost-Key: {key}\r\n{extra}"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()


def request_bytes(method: str, path: str, key: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    return request_head(method, path, len(body), key, headers) + body


class RawConnection:
    """One keep-alive connection to 127.0.0.1:port, as little client as a measurement can have."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter

    async def open(self) -> "RawConnection":
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
        return self

    async def send(self, raw: bytes) -> tuple[int, int, float, float]:
        """Write one request, read its whole response: (status, body bytes, seconds to the first
        body chunk, seconds to the end)."""
        started = time.perf_counter()
        self.writer.write(raw)
        status, size, first = await self.read_response()
        return status, size, first - started, time.perf_counter() - started

    async def read_response(self) -> tuple[int, int, float]:
        """(status, body bytes, perf_counter at the first body chunk)."""
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, chunked = 0, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        if not chunked:
            await self.reader.readexactly(length)
            return status, length, time.perf_counter()
        total, first = 0, 0.0
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await self.reader.readexactly(size + 2)
            if size and not first:
                first = time.perf_counter()
            total += size
            if size == 0:
                return status, total, first or time.perf_counter()

    def close(self) -> None:
        self.writer.close()


class Targets:
    """The verdicts of one bench run against its targets.

    Every target is checked with `check` (or `cell`, which also gives the table cell); `finish`
    prints one line per target and a last summary line, and returns the exit status: 1 if any
    target was missed, so `make bench` fails on a miss. The lines start with `VERDICT` to be found
    in a long log:

        VERDICT met  relay ceiling /v1/chat/completions: 12,345 tokens/s (target >= 10,000)
        VERDICT bench/stream.py: MISSED 1 of 5 targets
    """

    def __init__(self, bench: str) -> None:
        self.bench = bench
        self.results: list[tuple[bool, str]] = []

    def check(self, ok: bool, what: str, target: str = "") -> bool:
        self.results.append((ok, f"{what} (target {target})" if target else what))
        return ok

    def cell(self, ok: bool, what: str) -> str:
        """Check, and return the text for the target column of a table."""
        self.check(ok, what)
        return f"{'ok ' if ok else 'MISS'} {what}"

    def finish(self) -> int:
        print()
        for ok, what in self.results:
            print(f"VERDICT {'met ' if ok else 'MISS'} {what}")
        missed = sum(not ok for ok, _ in self.results)
        if not self.results:
            print(f"VERDICT {self.bench}: no target was checked")
            return 1
        if missed:
            print(f"VERDICT {self.bench}: MISSED {missed} of {len(self.results)} targets")
            return 1
        print(f"VERDICT {self.bench}: all {len(self.results)} targets met")
        return 0


def table(title: str, header: list[str], rows: list[list[object]]) -> None:
    print(f"\n## {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


__all__ = ["bench_client", "FakeUpstreamProcess", "GhostServer", "RawConnection", "Targets", "free_port", "percentile",
           "median", "request_bytes", "request_head", "rss_kb", "table", "json", "os", "time"]


async def start_toolbox(settings: Settings, stack: AsyncExitStack) -> tuple[Workspace, Toolbox]:
    """Ghost's workspace and tools in this process, as the app builds them, closed with `stack`."""
    workspace = await open_workspace(settings)
    stack.push_async_callback(workspace.db.close)
    return workspace, await start_tools(settings, workspace.sandbox_root, workspace.scratchpad, stack)
