"""What observing costs: agent turns and the proxy with metrics on (the default) and with tracing on,
against both off, interleaved in one run.

    python bench/observability.py [--rounds 5] [--processes 3] [--concurrency 8] [--window 2]

Three kinds of Ghost on one fake upstream (`python -m ghost.testing.fake_upstream`, its own
process): `off` (--no-metrics, no OTEL_*), `metrics` (the default), `tracing` (the default plus
OTEL_EXPORTER_OTLP_ENDPOINT at an OTLP/HTTP receiver in a process of its own that reads and drops
the spans, so its CPU is neither the bench's nor Ghost's; it is printed apart); `--processes` Ghost
processes of each kind. Why several: two Ghost processes of the same code and settings differ by
5–15 % in CPU per turn on these machines (where each lands in the caches and on the cores), more
than the 2 % to be told apart; the median over processes is what a verdict reads, and the spread
between processes of one kind is printed beside it. Two kinds of turn: a plain turn (one upstream
call) and a tool turn (the model calls `scratchpad_set`, then answers: two upstream calls and a
tool call, no sandbox).

1. **Latency**, turns one at a time, on the first process of each kind, in blocks of `--block`
   turns, the order rotating: turns/s, the latency added against `off` (p50), and Ghost's CPU per
   turn (each thread's `schedstat`, ns): the event loop's median over the blocks plus the other
   threads' over all its turns and a pause of `--settle` seconds (longer than the batch
   processor's 5 s delay, so the last spans' export is counted). One at a time, a turn also pays
   the event loop's going idle and waking for every reply (system calls whose cost moves with the
   other CPU's work), so this CPU is printed, not judged.
2. **Turn throughput**, the targets: each process in turn (the order rotating) gets `--concurrency`
   clients sending turns for `--window` seconds, so its event loop always has work; after each
   round, a pause of `--settle` s lets the batch processor send that round's spans. A process's CPU
   per turn in a round is its event loop's over its window plus its other threads' over the round
   (only its own window gives them work), per turn; the throughput Ghost's CPU allows is the
   inverse. A kind's figure is the median over its processes of each process's median over the
   rounds (robust to the one process of a kind that a run finds slow throughout). A third kind of
   turn, `long` (one upstream call whose answer streams in 200 pieces, as a model's does), is
   measured the same way for information: the same 3 spans, more work around them. So is a fourth
   kind of Ghost, `tracing 1/10`: tracing with the SDK's `parentbased_traceidratio` sampler at 0.1
   (one trace in ten recorded and exported), what a busy deployment would set. Verdicts: metrics
   cost at most 2 % of turn throughput, tracing (every turn traced) at most 5 %.
3. the catch-all proxy: requests/s with 20 concurrent keep-alive connections, first processes;
4. in this process, no server: the observers' own CPU per turn (a turn's events, two upstream
   calls, one tool call through `ghost.observe`) against the same loop unobserved — the cost with
   the noise of HTTP, the sandbox and the neighbours taken out (spans go to a receiver that drops them).

The machine's load average is printed beside the numbers (exit status 1 on a missed target): on a
shared machine they are noisy, and a miss under load is worth a second run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
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
# Section 2 also measures, for information (no target), a turn whose answer streams in 200 pieces,
# as a model's does: the spans are the same 3, the work around them larger.
LONG_REPLY = {"content": " ".join(["word"] * 200)}
THROUGHPUT_KINDS = (*KINDS, "long")
GHOSTS = ("off", "metrics", "tracing")
# Section 2 also measures, for information (no target), tracing with the SDK's standard sampler set
# to keep one trace in ten, as a busy deployment would: what sampling buys back.
SAMPLED = "tracing 1/10"
SAMPLED_ENV = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
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
    """Sections 1 and 3. Per (ghost, kind): each turn's seconds; per ghost: each proxy window's requests/s.

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


async def _busy_window(fake: FakeUpstreamProcess, ghost: GhostServer, kind: str, concurrency: int,
                       seconds: float) -> int:
    """Turns of `kind` done by `concurrency` clients sending one after another for `seconds`. Each
    tool turn's two replies are scripted for its own text (`?for=`), so concurrent turns get their own."""
    transport = httpx.AsyncHTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    done = 0
    async with httpx.AsyncClient(transport=transport, timeout=120) as client:
        deadline = time.perf_counter() + seconds

        async def sender(number: int) -> None:
            nonlocal done
            turn = 0
            while time.perf_counter() < deadline:
                text, turn = f"go {number} {turn}", turn + 1
                if kind != "plain":
                    replies = [TOOL_REPLY, {"content": "done"}] if kind == "tool" else [LONG_REPLY]
                    scripted = await client.post(fake.url + "/_fake/script", params={"for": text}, json=replies)
                    scripted.raise_for_status()
                reply = await client.post(ghost.url + "/v1/chat/completions", headers=ghost.headers,
                                          json={"model": "fake-model", "messages": [{"role": "user", "content": text}]})
                reply.raise_for_status()
                done += 1

        await asyncio.gather(*(sender(n) for n in range(concurrency)))
    return done


def saturated(fake: FakeUpstreamProcess, processes: dict[str, list[GhostServer]], kind: str, rounds: int,
              concurrency: int, window: float, settle: float) -> dict[str, list[tuple[float, float]]]:
    """Section 2. Per Ghost kind, per process: (its median CPU seconds per turn, its median turns/s)
    over `rounds` rounds of one `window` each, every process of every kind in a round, the order rotating."""
    every = [(name, ghost) for name, ghosts in processes.items() for ghost in ghosts]
    per_turn: dict[int, list[float]] = {id(ghost): [] for _, ghost in every}
    rates: dict[int, list[float]] = {id(ghost): [] for _, ghost in every}
    for r in range(rounds):
        order = every[r % len(every):] + every[:r % len(every)]
        loop: dict[int, float] = {}
        done: dict[int, int] = {}
        before = {id(ghost): others_cpu(ghost.process.pid) for _, ghost in every}
        for _, ghost in order:
            pid = ghost.process.pid
            started, clock = thread_cpu(pid).get(pid, 0.0), time.perf_counter()
            done[id(ghost)] = asyncio.run(_busy_window(fake, ghost, kind, concurrency, window))
            rates[id(ghost)].append(done[id(ghost)] / (time.perf_counter() - clock))
            loop[id(ghost)] = thread_cpu(pid).get(pid, 0.0) - started
        time.sleep(settle)  # this round's spans sent: each process's exporter worked only for its own window
        for _, ghost in every:
            others = others_cpu(ghost.process.pid) - before[id(ghost)]
            per_turn[id(ghost)].append((loop[id(ghost)] + others) / max(1, done[id(ghost)]))
    return {name: [(median(per_turn[id(g)]), median(rates[id(g)])) for g in ghosts]
            for name, ghosts in processes.items()}


def _ghost_cpu_per_turn(name: str, kind: str, latencies: dict[tuple[str, str], list[float]]) -> tuple[float, float, float]:
    """Ghost `name`'s CPU seconds per turn of `kind`: in all, its event loop's, its other threads'."""
    loop = median(LOOP[(name, kind)])
    others = OTHERS[(name, kind)] / len(latencies[(name, kind)])
    return loop + others, loop, others


def report_latency(latencies: dict[tuple[str, str], list[float]], proxied: dict[str, list[int]]) -> None:
    rows = []
    for kind in KINDS:
        base = median(latencies[("off", kind)])
        base_cpu = _ghost_cpu_per_turn("off", kind, latencies)[0]
        for name in GHOSTS:
            p50 = median(latencies[(name, kind)])
            cpu, loop, others = _ghost_cpu_per_turn(name, kind, latencies)
            rows.append([kind, name, f"{1 / p50:.1f}", f"{p50 * 1000:.2f}", f"{(p50 - base) * 1000:+.2f}",
                         f"{cpu * 1000:.2f}", f"{loop * 1000:.2f} + {others * 1000:.2f}",
                         f"{(cpu - base_cpu) * 1000:+.2f}", f"{base_cpu / cpu:.1%}"])
    table("1. Latency: agent turns one at a time (first process of each kind)",
          ["turn", "ghost", "turns/s (p50)", "ms/turn (p50)", "added ms", "Ghost CPU ms/turn",
           "event loop (median of blocks) + other threads", "added CPU ms", "CPU per turn: off / this"], rows)
    base = median(proxied["off"])
    table("3. Proxy, 20 connections (first process of each kind)", ["ghost", "requests/s (median)", "vs off"],
          [[name, f"{median(v):,.0f}", f"{median(v) / base:.1%}"] for name, v in proxied.items()])


def report_throughput(results: dict[str, dict[str, list[tuple[float, float]]]], concurrency: int,
                      verdicts: Targets) -> None:
    rows = []
    for kind in THROUGHPUT_KINDS:
        per_kind = results[kind]
        base = median([cpu for cpu, _ in per_kind["off"]])
        for name, share in (("off", None), ("metrics", METRICS_SHARE), ("tracing", TRACING_SHARE), (SAMPLED, None)):
            cpus = [cpu for cpu, _ in per_kind[name]]
            middle = median(cpus)
            ratio = base / middle  # the turns/s Ghost's CPU allows, relative to off
            rows.append([kind, name, f"{median([rate for _, rate in per_kind[name]]):.0f}",
                         " / ".join(f"{cpu * 1000:.3f}" for cpu in cpus), f"{middle * 1000:.3f}",
                         f"{(max(cpus) - min(cpus)) / min(cpus):.1%}", f"{(middle - base) * 1000:+.3f}", f"{ratio:.1%}"])
            if share is not None and kind in KINDS:
                verdicts.check(ratio >= share, f"{kind} turn throughput with {name}: {ratio:.1%} of off",
                               f">= {share:.0%}")
    table(f"2. Turn throughput: {concurrency} clients at once per process (the targets)",
          ["turn", "ghost", "turns/s (median)", "Ghost CPU ms/turn, each process (median of rounds)",
           "median", "spread between processes", "added ms", "throughput vs off (CPU)"], rows)


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
    watch = telemetry.turns_of("admin").watch("m") if telemetry else None  # as ChatService watches a turn
    try:
        async for event in _events():
            if watch is not None:
                watch.see(event)
    finally:
        if watch is not None:
            watch.end()
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
    table("4. The observers alone, in-process (CPU per turn: its events, 2 upstream calls, 1 tool call)",
          ["", "CPU µs/turn (median)", "added µs/turn"],
          [[name, f"{median(v) * 1e6:.0f}", f"{(median(v) - base) * 1e6:+.0f}"] for name, v in cpu.items()])
    kinds["tracing"].shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--turns", type=int, default=40, help="section 1: turns of each kind per Ghost per round")
    parser.add_argument("--window", type=float, default=2.0, help="seconds of load per process per round (sections 2, 3)")
    parser.add_argument("--block", type=int, default=10, help="section 1: turns in a row on one Ghost before the next")
    parser.add_argument("--processes", type=int, default=3, help="Ghost processes of each kind")
    parser.add_argument("--concurrency", type=int, default=8, help="section 2: clients sending turns at once")
    parser.add_argument("--settle", type=float, default=EXPORT_DELAY + 0.5,
                        help="seconds idle before the other threads' CPU is read (longer than the batch delay)")
    args = parser.parse_args()
    fake = FakeUpstreamProcess()
    sink = ReceiverProcess()
    common = ("--upstream-url", fake.url, "--log-level", "warning")
    made = {
        "off": lambda: GhostServer(*common, "--no-metrics", api_key=KEY),
        "metrics": lambda: GhostServer(*common, api_key=KEY),
        "tracing": lambda: GhostServer(*common, api_key=KEY, env={"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url}),
        SAMPLED: lambda: GhostServer(*common, api_key=KEY, env={"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url,
                                                                **SAMPLED_ENV}),
    }
    processes = {name: [make() for _ in range(max(1, args.processes))] for name, make in made.items()}
    first = {name: processes[name][0] for name in GHOSTS}
    verdicts = Targets("bench/observability.py")
    try:
        for ghosts in processes.values():
            for ghost in ghosts:
                ghost.start()
        measure(fake, first, 1, 5, 5, 0.5, 0.0)  # warm-up
        for kind in THROUGHPUT_KINDS:
            saturated(fake, processes, kind, 1, args.concurrency, 0.5, 0.0)
        load = os.getloadavg()
        print(f"\nload average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
        latencies, proxied = measure(fake, first, args.rounds, args.turns, args.block, args.window, args.settle)
        results = {kind: saturated(fake, processes, kind, args.rounds, args.concurrency, args.window, args.settle)
                   for kind in THROUGHPUT_KINDS}
        report_latency(latencies, proxied)
        report_throughput(results, args.concurrency, verdicts)
        observers_alone(sink.url, 400, args.rounds * 5)  # 400 turns: 1,600 spans, under the queue's 2,048 (none dropped)
        load = os.getloadavg()
        print(f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        print(f"the OTLP receiver's own CPU (its process, all sections): {cpu_seconds(sink.process.pid):.2f} s")
    finally:
        for ghosts in processes.values():
            for ghost in ghosts:
                ghost.close()
        sink.stop()
        fake.stop()
    return verdicts.finish()


if __name__ == "__main__":
    raise SystemExit(main())
