"""What one agent turn adds, beside the upstream reached directly and a thin proxy, in one run.

Run with the project's Python:  python bench/turn.py  [--turns N] [--long-turns N] [--window S]

It starts the scripted fake upstream, a thin Starlette + httpx proxy in front of it
(`bench/_thin_proxy.py`: the least a useful chat proxy costs) and a Ghost, each in its own process,
and sends the same streamed chat completion (`stream: true`, no tool call in the reply) three ways,
interleaved so the machine's noise hits all alike:

- latency, one request at a time on a keep-alive connection: p50/p99 of the whole reply and of the
  first streamed chunk, and what the proxy and Ghost add to the direct call;
- Ghost's CPU per turn: user + system time of the server process (/proc/<pid>/stat, every thread)
  over the sequential Ghost turns, divided by their number;
- throughput with 20 concurrent keep-alive clients (turns/s);
- the same latency with 200 prior messages in the request (a long chat resent in full, as clients do).

Ghost's turn sends the upstream its system prompt and tool list on top of the client's messages;
that is part of what it adds. The load comes from a minimal HTTP/1.1 client on raw asyncio
streams, so the client's own cost is small and equal on every path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import FakeUpstreamProcess, GhostServer, RawConnection, Targets, free_port, percentile, request_bytes, table

from ghost.testing.server import clean_env

KEY = "bench-key-0123456789"
PATH = "/v1/chat/completions"
WAYS = ("direct", "proxy", "ghost")
TARGETS = {"p50_ms": 2.0, "p99_ms": 4.0, "first_ms": 2.0, "cpu_ms": 1.5, "turns_s": 400, "long_p50_ms": 4.0}
TICK_S = 1 / os.sysconf("SC_CLK_TCK")
# --session: every turn names one session, so a resent conversation is that session's, stored in
# place (its last turn regenerated); without it each resend is a new session of its own.
SESSION: list[bool] = [False]


def session_header(body: bytes) -> dict[str, str]:
    return {"X-Ghost-Session": f"bench-{len(body)}"} if SESSION[0] else {}  # one session per conversation


def chat_body(prior: int) -> bytes:
    messages: list[dict[str, str]] = []
    for i in range(prior):
        if i % 2 == 0:
            messages.append({"role": "user", "content": f"Question {i}: what is in the file notes-{i}.txt, "
                                                        "and how does it relate to the previous one?"})
        else:
            messages.append({"role": "assistant", "content": f"Answer {i}: the file holds a short list of "
                                                             "tasks; it continues the previous file's list."})
    messages.append({"role": "user", "content": "Say hello to the benchmark in five words, please."})
    return json.dumps({"model": "fake-model", "messages": messages, "stream": True}).encode()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S  # utime, stime (fields 14 and 15)


async def latency(ports: dict[str, int], body: bytes, n: int, warmup: int, ghost_pid: int
                  ) -> tuple[dict[str, list[float]], dict[str, list[float]], float]:
    """Interleaved sequential turns: (total ms per way, first-chunk ms per way, Ghost CPU ms per turn)."""
    conns = {way: await RawConnection(port).open() for way, port in ports.items()}
    raw = request_bytes("POST", PATH, KEY, body, session_header(body))
    total: dict[str, list[float]] = {way: [] for way in ports}
    first: dict[str, list[float]] = {way: [] for way in ports}
    cpu_before = 0.0
    for i in range(warmup + n):
        if i == warmup:
            cpu_before = cpu_seconds(ghost_pid)
        order = WAYS[i % 3:] + WAYS[:i % 3]  # rotate who goes first
        for way in order:
            status, _, to_first, to_end = await conns[way].send(raw)
            assert status == 200, (way, status)
            if i >= warmup:
                total[way].append(to_end * 1000)
                first[way].append(to_first * 1000)
    cpu_ms = (cpu_seconds(ghost_pid) - cpu_before) * 1000 / n
    for conn in conns.values():
        conn.close()
    return total, first, cpu_ms


async def throughput_window(port: int, body: bytes, concurrency: int, seconds: float) -> float:
    conns = [await RawConnection(port).open() for _ in range(concurrency)]
    raw = request_bytes("POST", PATH, KEY, body, session_header(body))
    deadline = time.perf_counter() + seconds
    done = 0

    async def worker(conn: RawConnection) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await conn.send(raw)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - started
    for conn in conns:
        conn.close()
    return done / elapsed


async def throughput(ports: dict[str, int], body: bytes, concurrency: int, window: float, rounds: int
                     ) -> dict[str, float]:
    results: dict[str, list[float]] = {way: [] for way in ports}
    for way, port in ports.items():  # warm-up
        await throughput_window(port, body, concurrency, 0.5)
    for i in range(rounds):
        for way in (WAYS if i % 2 == 0 else WAYS[::-1]):
            results[way].append(await throughput_window(ports[way], body, concurrency, window))
    return {way: sum(v) / len(v) for way, v in results.items()}


def start_thin_proxy(upstream_url: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("_thin_proxy.py")), upstream_url,
                                str(port)], env=clean_env())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            asyncio.run(asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1))
            return process, port
        except OSError:
            time.sleep(0.05)
    process.terminate()
    raise RuntimeError("the thin proxy did not start")


def added(samples: dict[str, list[float]], way: str, q: float) -> float:
    return percentile(samples[way], q) - percentile(samples["direct"], q)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=1500, help="sequential turns per way")
    parser.add_argument("--long-turns", type=int, default=300, help="sequential turns per way, 200 prior messages")
    parser.add_argument("--window", type=float, default=3.0, help="seconds per throughput window")
    parser.add_argument("--rounds", type=int, default=3, help="throughput windows per way")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--session", action="store_true",
                        help="send every turn under one session id (X-Ghost-Session) instead of none")
    args = parser.parse_args()
    SESSION[0] = args.session

    load_before = os.getloadavg()
    upstream = FakeUpstreamProcess()
    proxy, proxy_port = start_thin_proxy(upstream.url)
    ghost = GhostServer("--upstream-url", upstream.url, api_key=KEY)
    try:
        ghost.start()
        assert ghost.process is not None
        ports = {"direct": upstream.port, "proxy": proxy_port, "ghost": ghost.port}
        short, long_ = chat_body(0), chat_body(200)
        total, first, cpu_ms = asyncio.run(latency(ports, short, args.turns, 200, ghost.process.pid))
        tput = asyncio.run(throughput(ports, short, args.concurrency, args.window, args.rounds))
        long_total, long_first, long_cpu_ms = asyncio.run(latency(ports, long_, args.long_turns, 30,
                                                                  ghost.process.pid))
    finally:
        ghost.close()
        proxy.terminate()
        proxy.wait(10)
        upstream.stop()
    load_after = os.getloadavg()

    targets = Targets("bench/turn.py")
    rows: list[list[object]] = []
    for label, samples in (("whole reply", total), ("first chunk", first), ("whole reply, 200 prior messages", long_total),
                           ("first chunk, 200 prior messages", long_first)):
        for q in (50, 99):
            rows.append([f"{label} p{q} (ms)", f"{percentile(samples['direct'], q):.2f}",
                         f"+{added(samples, 'proxy', q):.2f}", f"+{added(samples, 'ghost', q):.2f}"])
    rows.append(["turns/s at concurrency 20", f"{tput['direct']:.0f}", f"{tput['proxy']:.0f}", f"{tput['ghost']:.0f}"])
    rows.append(["Ghost CPU per turn (ms)", "", "", f"{cpu_ms:.2f} (200 prior: {long_cpu_ms:.2f})"])
    print(f"bench/turn.py{' --session' if args.session else ''}: {args.turns} sequential turns per way "
          f"({args.long_turns} with 200 prior messages), "
          f"{args.rounds}x{args.window:.0f}s windows at concurrency {args.concurrency}; "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    table("An agent turn vs the upstream directly and a thin proxy", ["measure", "direct", "thin proxy adds",
                                                                      "Ghost adds"], rows)
    targets.check(added(total, "ghost", 50) <= TARGETS["p50_ms"], f"turn added p50: +{added(total, 'ghost', 50):.2f} ms",
                  f"<= +{TARGETS['p50_ms']} ms")
    targets.check(added(total, "ghost", 99) <= TARGETS["p99_ms"], f"turn added p99: +{added(total, 'ghost', 99):.2f} ms",
                  f"<= +{TARGETS['p99_ms']} ms")
    targets.check(added(first, "ghost", 50) <= TARGETS["first_ms"],
                  f"first chunk added p50: +{added(first, 'ghost', 50):.2f} ms", f"<= +{TARGETS['first_ms']} ms")
    targets.check(cpu_ms <= TARGETS["cpu_ms"], f"Ghost CPU per turn: {cpu_ms:.2f} ms", f"<= {TARGETS['cpu_ms']} ms")
    targets.check(tput["ghost"] >= TARGETS["turns_s"], f"turns/s at concurrency {args.concurrency}: {tput['ghost']:.0f}",
                  f">= {TARGETS['turns_s']}")
    targets.check(added(long_total, "ghost", 50) <= TARGETS["long_p50_ms"],
                  f"turn added p50 with 200 prior messages: +{added(long_total, 'ghost', 50):.2f} ms",
                  f"<= +{TARGETS['long_p50_ms']} ms")
    return targets.finish()


if __name__ == "__main__":
    raise SystemExit(main())
