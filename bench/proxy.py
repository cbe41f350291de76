"""Benchmark Ghost's catch-all proxy against the same upstream reached directly.

Run with the project's Python:  python bench/proxy.py  [--requests N] [--window S] [--body-mb M]

It starts its own fake upstream (`python -m ghost.testing.fake_upstream`) and its own Ghost on
loopback, then measures, interleaving "direct" and "via Ghost" so machine noise hits both alike:

- latency of a small non-streaming chat-sized request (POST /echo/v1/chat/completions), one
  request at a time on a keep-alive connection: p50 and p99, and what Ghost adds;
- throughput with 20 concurrent keep-alive connections;
- Ghost's resident memory while a 200 MB request body, and then a 200 MB response body, stream
  through the proxy (sampled from /proc/<pid>/status).

The load comes from a minimal HTTP/1.1 client on raw asyncio streams, so the client's own cost is
small and equal on both paths. Nothing leaves the loopback interface.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from _common import FakeUpstreamProcess, RawConnection as Connection, Targets, percentile, request_bytes as _request_bytes, \
    request_head as _request_head, rss_kb

from ghost.testing.server import GhostServer

KEY = "bench-key-0123456789"
CHAT_PATH = "/echo/v1/chat/completions"
CHAT_BODY = json.dumps({
    "model": "fake-model",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Say hello to the benchmark in five words, please."},
    ],
    "temperature": 0.2,
    "max_tokens": 64,
    "stream": False,
}).encode()
def request_head(method: str, path: str, length: int) -> bytes:
    return _request_head(method, path, length, KEY)


def request_bytes(method: str, path: str, body: bytes = b"") -> bytes:
    return _request_bytes(method, path, KEY, body)


TARGETS = {"p50_ms": 1.5, "p99_ms": 4.0, "throughput_ratio": 0.12, "rss_mb": 32.0}


# --- measurements --------------------------------------------------------------------------------------


async def latency(direct_port: int, ghost_port: int, n: int) -> dict[str, list[float]]:
    raw = request_bytes("POST", CHAT_PATH, CHAT_BODY)
    conns = {"direct": await Connection(direct_port).open(), "ghost": await Connection(ghost_port).open()}
    samples: dict[str, list[float]] = {"direct": [], "ghost": []}
    for i in range(n + 200):  # the first 200 warm both paths up
        order = ("direct", "ghost") if i % 2 else ("ghost", "direct")
        for name in order:
            started = time.perf_counter()
            status, *_ = await conns[name].send(raw)
            elapsed = (time.perf_counter() - started) * 1000
            assert status == 200, (name, status)
            if i >= 200:
                samples[name].append(elapsed)
    for conn in conns.values():
        conn.close()
    return samples


async def throughput_window(port: int, concurrency: int, seconds: float) -> int:
    raw = request_bytes("POST", CHAT_PATH, CHAT_BODY)
    conns = [await Connection(port).open() for _ in range(concurrency)]
    deadline = time.perf_counter() + seconds
    done = 0

    async def worker(conn: Connection) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            status, *_ = await conn.send(raw)
            assert status == 200, status
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - started
    for conn in conns:
        conn.close()
    return round(done / elapsed)


async def throughput(direct_port: int, ghost_port: int, concurrency: int, window: float,
                     rounds: int) -> dict[str, list[int]]:
    results: dict[str, list[int]] = {"direct": [], "ghost": []}
    await throughput_window(ghost_port, concurrency, 0.5)  # warm-up
    for i in range(rounds):
        order = (("direct", direct_port), ("ghost", ghost_port))
        for name, port in order if i % 2 == 0 else reversed(order):
            results[name].append(await throughput_window(port, concurrency, window))
    return results


# --- memory ---------------------------------------------------------------------------------------------


@dataclass
class RssSampler:
    pid: int
    samples: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> "RssSampler":
        self.before = rss_kb(self.pid)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(rss_kb(self.pid))
            time.sleep(0.005)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(rss_kb(self.pid))

    @property
    def growth_mb(self) -> float:
        return (max(self.samples) - self.before) / 1024


async def upload(port: int, total: int, chunk: int = 256 * 1024) -> tuple[int, float]:
    conn = await Connection(port).open()
    block = os.urandom(chunk)
    started = time.perf_counter()
    conn.writer.write(request_head("POST", "/echo/upload", total))
    sent = 0
    while sent < total:
        piece = block[: min(chunk, total - sent)]
        conn.writer.write(piece)
        await conn.writer.drain()
        sent += len(piece)
    status, *_ = await conn.read_response()
    conn.close()
    return status, time.perf_counter() - started


async def download(port: int, total: int) -> tuple[int, float]:
    conn = await Connection(port).open()
    started = time.perf_counter()
    status, size, *_ = await conn.send(request_bytes("GET", f"/bytes/{total}"))
    conn.close()
    assert size == total, size
    return status, time.perf_counter() - started


def memory(ghost: GhostServer, body_mb: int) -> dict[str, float]:
    assert ghost.process is not None
    pid = ghost.process.pid
    total = body_mb * 1024 * 1024
    out: dict[str, float] = {"rss_idle_mb": rss_kb(pid) / 1024}
    with RssSampler(pid) as up:
        status, seconds = asyncio.run(upload(ghost.port, total))
    assert status == 200, status
    out |= {"upload_growth_mb": up.growth_mb, "upload_mb_s": body_mb / seconds}
    with RssSampler(pid) as down:
        status, seconds = asyncio.run(download(ghost.port, total))
    assert status == 200, status
    out |= {"download_growth_mb": down.growth_mb, "download_mb_s": body_mb / seconds}
    out["hwm_mb"] = rss_kb(pid, "VmHWM") / 1024
    return out


# --- processes ------------------------------------------------------------------------------------------


def use_uvloop() -> Callable[[], None]:
    try:
        import uvloop
    except ImportError:
        return lambda: None
    return uvloop.install


# --- report ------------------------------------------------------------------------------------------------


def rows(lat: dict[str, list[float]], tput: dict[str, list[int]], mem: dict[str, float]) -> Iterator[tuple[str, ...]]:
    d50, g50 = percentile(lat["direct"], 50), percentile(lat["ghost"], 50)
    d99, g99 = percentile(lat["direct"], 99), percentile(lat["ghost"], 99)
    dt, gt = statistics.mean(tput["direct"]), statistics.mean(tput["ghost"])
    ratio = gt / dt

    def ok(good: bool) -> str:
        return "yes" if good else "NO"

    yield ("latency p50 (ms)", f"{d50:.3f}", f"{g50:.3f}", f"+{g50 - d50:.3f} ms", "<= +1.5 ms", ok(g50 - d50 <= TARGETS["p50_ms"]))
    yield ("latency p99 (ms)", f"{d99:.3f}", f"{g99:.3f}", f"+{g99 - d99:.3f} ms", "<= +4 ms", ok(g99 - d99 <= TARGETS["p99_ms"]))
    yield ("throughput c=20 (req/s)", f"{dt:.0f}", f"{gt:.0f}", f"{ratio:.1%} of direct", ">= 12 %", ok(ratio >= TARGETS["throughput_ratio"]))
    yield ("RSS growth, 200 MB upload", "", f"{mem['upload_mb_s']:.0f} MB/s", f"+{mem['upload_growth_mb']:.1f} MB", "<= 32 MB", ok(mem["upload_growth_mb"] <= TARGETS["rss_mb"]))
    yield ("RSS growth, 200 MB download", "", f"{mem['download_mb_s']:.0f} MB/s", f"+{mem['download_growth_mb']:.1f} MB", "<= 32 MB", ok(mem["download_growth_mb"] <= TARGETS["rss_mb"]))


def print_table(table: list[tuple[str, ...]]) -> None:
    header = ("measure", "direct", "via Ghost", "Ghost adds / ratio", "target", "met")
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *table]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="latency samples per path")
    parser.add_argument("--window", type=float, default=2.0, help="seconds per throughput window")
    parser.add_argument("--rounds", type=int, default=3, help="throughput windows per path")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--body-mb", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="also print the raw numbers as JSON")
    args = parser.parse_args()

    use_uvloop()()
    upstream = FakeUpstreamProcess()
    direct_port = upstream.port
    ghost = GhostServer("--upstream-url", upstream.url, api_key=KEY)
    try:
        ghost.start()
        lat = asyncio.run(latency(direct_port, ghost.port, args.requests))
        tput = asyncio.run(throughput(direct_port, ghost.port, args.concurrency, args.window, args.rounds))
        mem = memory(ghost, args.body_mb)
    finally:
        ghost.close()
        upstream.stop()
    table = list(rows(lat, tput, mem))
    print(f"Ghost proxy benchmark: {args.requests} sequential requests per path, "
          f"{args.rounds}x{args.window:.0f}s windows at concurrency {args.concurrency}, {args.body_mb} MB bodies; "
          f"idle RSS {mem['rss_idle_mb']:.0f} MB, peak {mem['hwm_mb']:.0f} MB")
    print_table(table)
    if args.json:
        print(json.dumps({"latency_ms": {k: {"p50": percentile(v, 50), "p99": percentile(v, 99)} for k, v in lat.items()},
                          "throughput": tput, "memory": mem}, indent=2))
    targets = Targets("bench/proxy.py")
    for measure, _, via_ghost, adds, target, met in table:
        targets.check(met == "yes", f"{measure}: {adds or via_ghost}", target)
    return targets.finish()


if __name__ == "__main__":
    raise SystemExit(main())
