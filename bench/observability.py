"""What observing costs: agent turns and the proxy with metrics on (the default) and with tracing on,
against both off, interleaved in one run.

    python bench/observability.py [--rounds 5] [--turns 40] [--block 10] [--window 2]

Three Ghosts on one fake upstream (`python -m ghost.testing.fake_upstream`, its own process):
`off` (--no-metrics, no OTEL_*), `metrics` (the default), `tracing` (the default plus
OTEL_EXPORTER_OTLP_ENDPOINT at an OTLP/HTTP receiver in a process of its own that reads and drops
the spans, so its CPU is neither the bench's nor Ghost's; it is printed apart). The Ghosts take turns,
the order rotating, so machine noise hits all alike:

1. agent turns, one at a time: a plain turn (one upstream call) and a tool turn (the model calls
   `scratchpad_set`, then answers: two upstream calls and a tool call, no sandbox), as turns/s and
   the latency added per turn against `off` (p50), and the CPU time the Ghost process spent per
   turn (from /proc: each thread's `schedstat`, in ns). The Ghosts take turns in blocks of
   `--block` turns, the order rotating; a turn's CPU is its event loop's (the main thread's) per
   turn, the median over its blocks, plus its other threads' (the batch exporter's encoding and
   POST, the database's writes) over all its turns of that kind and a pause of `--settle` seconds
   after them, longer than the batch processor's default delay (`OTEL_BSP_SCHEDULE_DELAY`, 5 s), so
   the last spans' export is counted. The event loop's idle wakeups in the pause (~2 ms of CPU a
   second, the same for every Ghost) are not. The tracing Ghost runs the SDK's defaults, as a
   user's would;
2. the catch-all proxy: requests/s with 20 concurrent keep-alive connections;
3. in this process, no server: the observers' own CPU per turn (a turn's events, two upstream
   calls, one tool call through `ghost.observe`) against the same loop unobserved — the cost with
   the noise of HTTP, the sandbox and the neighbours taken out (spans go to a receiver that drops them).

Targets (a VERDICT line each; exit status 1 on a miss): metrics cost at most 2 % of turn
throughput, tracing at most 5 %. The verdict reads throughput as what Ghost's CPU allows (CPU per
turn of `off` / of the other): on a shared machine wall-clock turns/s swing by more than the few
percent measured, while a process's own CPU time barely moves with its neighbours' load. The machine's load average is printed beside the numbers: on a
shared machine they are noisy, and a miss under load is worth a second run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import FakeUpstreamProcess, GhostServer, Targets, bench_client, median, table
from proxy import KEY, throughput_window

from ghost.config import TraceSettings
from ghost.events import Done, TextDelta, ToolActivity, TurnStats, Usage
from ghost.llm.chat import Completion, Delta
from ghost.observe import Telemetry

CLIENT = bench_client()
METRICS_SHARE, TRACING_SHARE = 0.98, 0.95
TOOL_REPLY = {"content": "", "tool_calls": [{"name": "scratchpad_set", "arguments": {"key": "k", "value": "v"}}]}
KINDS = ("plain", "tool")
EXPORT_DELAY = 5.0  # the SDK's default OTEL_BSP_SCHEDULE_DELAY, in seconds
LOOP: dict[tuple[str, str], list[float]] = {}  # per (ghost, kind): each block's event-loop CPU seconds per turn
OTHERS: dict[tuple[str, str], float] = {}  # per (ghost, kind): its other threads' CPU seconds, all blocks


def one_turn(fake: FakeUpstreamProcess, ghost: GhostServer, kind: str) -> float:
    """Seconds for one turn (the scripting of the fake upstream not counted)."""
    if kind == "tool":
        fake.script(TOOL_REPLY, {"content": "done"})
    started = time.perf_counter()
    response = CLIENT.post(ghost.url + "/v1/chat/completions", headers=ghost.headers,
                           json={"model": "fake-model", "messages": [{"role": "user", "content": "go"}]})
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of process `pid` (by thread id), from its `schedstat` (in ns).
    (A thread that ended between two readings takes its time with it; Ghost's threads — the event
    loop, the batch exporter, the database's and the files' workers — live as long as the server.)"""
    spent = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            spent[int(task.name)] = int((task / "schedstat").read_text().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            pass  # the thread ended as it was read
    return spent


def cpu_seconds(pid: int) -> float:
    """CPU time of process `pid`, all its threads (user + system from `/proc/<pid>/stat` when
    `schedstat` cannot be read: its clock ticks of 10 ms would move a 30-turn segment by ±5 %)."""
    if spent := thread_cpu(pid):
        return sum(spent.values())
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def others_cpu(pid: int) -> float:
    """CPU seconds of process `pid`'s threads other than its main one (the event loop)."""
    return sum(spent for tid, spent in thread_cpu(pid).items() if tid != pid)


def measure(fake: FakeUpstreamProcess, ghosts: dict[str, GhostServer], rounds: int, turns: int, block: int,
            window: float, settle: float) -> tuple[dict[tuple[str, str], list[float]], dict[str, list[int]]]:
    """Per (ghost, kind): each turn's seconds; per ghost: each proxy window's requests/s.

    The turns of a kind go in blocks of `block` turns, the Ghosts taking turns block by block (the
    order rotating), so a burst of the neighbours' load hits every Ghost alike. Each block's event
    loop CPU (the main thread's, read right after its last turn) per turn goes into LOOP: its
    median is robust to the blocks a burst inflated. The other threads (the batch exporter's
    encoding and POST, the database's writes) work on their own schedule: their CPU is read over
    all of a kind's blocks and a pause of `settle` seconds after them (longer than the batch
    processor's 5 s delay, so the last spans are sent), into OTHERS. The event loop's idle time in
    that pause is not counted: idle, it wakes ~10 times a second (the loop-lag probe and other
    timers, ~2 ms of CPU a second), the same for every Ghost and no part of a turn."""
    latencies: dict[tuple[str, str], list[float]] = {(n, k): [] for n in ghosts for k in KINDS}
    proxied: dict[str, list[int]] = {n: [] for n in ghosts}
    LOOP.clear()
    OTHERS.clear()
    names = list(ghosts)
    blocks = max(1, turns // block)
    for kind in KINDS:
        before = {name: others_cpu(ghost.process.pid) for name, ghost in ghosts.items()}
        for b in range(rounds * blocks):
            order = names[b % len(names):] + names[:b % len(names)]
            for name in order:
                ghost, pid = ghosts[name], ghosts[name].process.pid
                started = thread_cpu(pid).get(pid, 0.0)
                latencies[(name, kind)].extend(one_turn(fake, ghost, kind) for _ in range(block))
                LOOP.setdefault((name, kind), []).append((thread_cpu(pid).get(pid, 0.0) - started) / block)
        time.sleep(settle)
        for name, ghost in ghosts.items():
            OTHERS[(name, kind)] = others_cpu(ghost.process.pid) - before[name]
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            proxied[name].append(asyncio.run(throughput_window(ghosts[name].port, 20, window)))
            time.sleep(settle)  # the proxied requests' spans sent before the next window
    return latencies, proxied


def _ghost_cpu_per_turn(name: str, kind: str, latencies: dict[tuple[str, str], list[float]]) -> tuple[float, float, float]:
    """Ghost `name`'s CPU seconds per turn of `kind`: in all, its event loop's, its other threads'."""
    loop = median(LOOP[(name, kind)])
    others = OTHERS[(name, kind)] / len(latencies[(name, kind)])
    return loop + others, loop, others


def report(latencies: dict[tuple[str, str], list[float]], proxied: dict[str, list[int]], verdicts: Targets) -> None:
    load = os.getloadavg()
    print(f"\nload average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    rows = []
    for kind in KINDS:
        base = median(latencies[("off", kind)])
        base_cpu = _ghost_cpu_per_turn("off", kind, latencies)[0]
        for name, share in (("off", None), ("metrics", METRICS_SHARE), ("tracing", TRACING_SHARE)):
            p50 = median(latencies[(name, kind)])
            cpu, loop, others = _ghost_cpu_per_turn(name, kind, latencies)
            ratio = base_cpu / cpu  # the turns/s Ghost's CPU allows, relative to off
            rows.append([kind, name, f"{1 / p50:.1f}", f"{p50 * 1000:.2f}", f"{(p50 - base) * 1000:+.2f}",
                         f"{cpu * 1000:.2f}", f"{loop * 1000:.2f} + {others * 1000:.2f}",
                         f"{(cpu - base_cpu) * 1000:+.2f}", f"{ratio:.1%}"])
            if share is not None:
                verdicts.check(ratio >= share, f"{kind} turn throughput (CPU-bound) with {name}: {ratio:.1%} of off",
                               f">= {share:.0%}")
    table("1. Agent turns, one at a time", ["turn", "ghost", "turns/s (p50)", "ms/turn (p50)", "added ms",
                                             "Ghost CPU ms/turn", "event loop (median of blocks) + other threads",
                                             "added CPU ms", "throughput vs off (CPU)"], rows)
    base = median(proxied["off"])
    table("2. Proxy, 20 connections", ["ghost", "requests/s (median)", "vs off"],
          [[name, f"{median(v):,.0f}", f"{median(v) / base:.1%}"] for name, v in proxied.items()])


class ReceiverProcess:
    """The OTLP/HTTP receiver (`ghost.testing.otlp_receiver`, dropping what it gets) in its own process."""

    def __init__(self) -> None:
        code = ("import time; from ghost.testing.otlp_receiver import OtlpReceiver; "
                "r = OtlpReceiver(keep=False).start(); print(r.url, flush=True); time.sleep(10 ** 6)")
        self.process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


# --- 3. the observers alone, in-process ---------------------------------------------------------------

async def _events():  # a short turn's events
    for event in (ToolActivity("x", "start", "a"), ToolActivity("x", "end", "b"), *[TextDelta("w ")] * 8,
                  Usage(10, 5), TurnStats(0.1, 0.1, 2), Done("stop")):
        yield event


class _Upstream:
    async def _reply(self):
        for _ in range(8):
            yield Delta("content", "w")
        yield Completion([], "stop", Usage(10, 5))

    def stream_chat(self, payload: dict, request_id: str):
        return self._reply()


class _Result:
    ok = True


async def _tool() -> _Result:
    return _Result()


async def _turn(telemetry: Telemetry | None) -> None:
    upstream = telemetry.upstream(_Upstream()) if telemetry else _Upstream()
    events = telemetry.turns_of("admin").observe(_events(), "m") if telemetry else _events()
    async for _ in events:
        pass
    for _ in range(2):
        async for _ in upstream.stream_chat({"model": "m"}, "r"):
            pass
    await (telemetry.tool_call("execute", "execute", "c1", _tool()) if telemetry else _tool())


async def _cpu_per_turn(telemetry: Telemetry | None, turns: int) -> float:
    """All threads' CPU per turn, the export of these turns' spans included: flushed before the
    clock is read (else the batch thread sends them, every 5 s, within another segment)."""
    started = time.process_time()
    for _ in range(turns):
        await _turn(telemetry)
    if telemetry is not None and telemetry.tracing.enabled:
        telemetry.tracing.provider.force_flush()
    return (time.process_time() - started) / turns


def observers_alone(sink_url: str, turns: int, rounds: int) -> None:
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink_url  # the SDK's exporter reads it, as in Ghost
    untraced = TraceSettings(exporter_otlp_endpoint="", exporter_otlp_traces_endpoint="")
    kinds = {"off": None, "metrics": Telemetry(None, untraced),
             "tracing": Telemetry(None, TraceSettings(exporter_otlp_endpoint=sink_url))}
    cpu: dict[str, list[float]] = {name: [] for name in kinds}
    for _ in range(rounds):
        for name, telemetry in kinds.items():
            cpu[name].append(asyncio.run(_cpu_per_turn(telemetry, turns)))
    base = median(cpu["off"])
    table("3. The observers alone, in-process (CPU per turn: its events, 2 upstream calls, 1 tool call)",
          ["", "CPU µs/turn (median)", "added µs/turn"],
          [[name, f"{median(v) * 1e6:.0f}", f"{(median(v) - base) * 1e6:+.0f}"] for name, v in cpu.items()])
    kinds["tracing"].shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--turns", type=int, default=40, help="turns of each kind per Ghost per round")
    parser.add_argument("--window", type=float, default=2.0, help="seconds of proxy load per Ghost per round")
    parser.add_argument("--block", type=int, default=10, help="turns in a row on one Ghost before the next takes over")
    parser.add_argument("--settle", type=float, default=EXPORT_DELAY + 0.5,
                        help="seconds idle after each kind's turns before the other threads' CPU is read")
    args = parser.parse_args()
    fake = FakeUpstreamProcess()
    sink = ReceiverProcess()
    common = ("--upstream-url", fake.url, "--log-level", "warning")
    ghosts = {
        "off": GhostServer(*common, "--no-metrics", api_key=KEY),
        "metrics": GhostServer(*common, api_key=KEY),
        "tracing": GhostServer(*common, api_key=KEY, env={"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url}),
    }
    verdicts = Targets("bench/observability.py")
    try:
        for ghost in ghosts.values():
            ghost.start()
        measure(fake, ghosts, 1, 5, 5, 0.5, 0.0)  # warm-up
        latencies, proxied = measure(fake, ghosts, args.rounds, args.turns, args.block, args.window, args.settle)
        report(latencies, proxied, verdicts)
        observers_alone(sink.url, 2000, args.rounds)
        print(f"\nthe OTLP receiver's own CPU (its process, all sections): {cpu_seconds(sink.process.pid):.2f} s")
    finally:
        for ghost in ghosts.values():
            ghost.stop()
        sink.stop()
        fake.stop()
    return verdicts.finish()


if __name__ == "__main__":
    raise SystemExit(main())
