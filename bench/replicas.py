"""Replicas: agent-turn throughput through HAProxy with 1, 2 and 3 Ghosts, and PostgreSQL's added latency.

Real parts: PostgreSQL 15 (its own temp server), Ghost replicas sharing it and one workspace root,
HAProxy (round robin), the scripted fake upstream in its own process (answering at once, no tool
call: what is measured is Ghost's own share of a turn — key check, session continuation, history
written to the store — not a model).

1. Throughput: `--clients` concurrent clients send `--turns` turns in all through the balancer, for
   1, 2 and 3 replicas (a fresh database each).
2. Latency: one client's turns straight to one Ghost on SQLite and one on PostgreSQL, alternated so
   that both see the same machine load; the difference is what the shared store adds to a turn.

On these 2-core machines every replica, PostgreSQL, HAProxy, the fake upstream and the clients
share the same two cores: throughput cannot grow with replicas past what two cores give, and the
printout says so with the CPU count. Numbers on a shared machine are inflated: the load average is
printed beside them.

    python bench/replicas.py [--turns 120] [--clients 6] [--latency-turns 40]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

from _common import FakeUpstreamProcess, Targets, bench_client, percentile
from ghost.testing.haproxy import HAProxy
from ghost.testing.postgres import PostgresServer
from ghost.testing.server import TEST_KEY, GhostServer

HEADERS = {"X-Ghost-Key": TEST_KEY}


def one_turn(client: httpx.Client, base: str) -> float:
    body = {"model": "fake-model", "messages": [{"role": "user", "content": f"hi {uuid.uuid4().hex}"}]}
    started = time.perf_counter()
    reply = client.post(base + "/v1/chat/completions", json=body, headers=HEADERS)
    reply.raise_for_status()
    return time.perf_counter() - started


def throughput(base: str, turns: int, clients: int) -> float:
    """Turns per second, `clients` at once, `turns` in all."""
    per_client = max(1, turns // clients)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with bench_client() as client:
                for _ in range(per_client):
                    one_turn(client, base)
        except BaseException as exc:  # reported after the run
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return per_client * clients / elapsed


def cluster_throughput(pg: PostgresServer, upstream: FakeUpstreamProcess, count: int, turns: int,
                       clients: int) -> float:
    url = pg.create_database(f"bench{count}")
    root = Path(tempfile.mkdtemp(prefix="ghost-bench-shared-"))
    replicas = [GhostServer("--upstream-url", upstream.url, "--database-url", url, "--workspace-root", str(root),
                            home=Path(tempfile.mkdtemp(prefix=f"ghost-bench-r{i}-"))) for i in range(count)]
    balancer = None
    try:
        for replica in replicas:
            replica.start(timeout=120)
        balancer = HAProxy([(f"r{i}", r.port) for i, r in enumerate(replicas)]).start(ready_servers=count)
        throughput(balancer.url, clients * 2, clients)  # warm up: every replica's workspace opened
        return throughput(balancer.url, turns, clients)
    finally:
        if balancer is not None:
            balancer.stop()
        for replica in replicas:
            replica.stop()


def latencies(pg: PostgresServer, upstream: FakeUpstreamProcess, turns: int) -> tuple[list[float], list[float]]:
    sqlite = GhostServer("--upstream-url", upstream.url, home=Path(tempfile.mkdtemp(prefix="ghost-bench-sqlite-")))
    postgres = GhostServer("--upstream-url", upstream.url, "--database-url", pg.create_database("latency"),
                           home=Path(tempfile.mkdtemp(prefix="ghost-bench-pg-")))
    with sqlite, postgres, bench_client() as client:
        for _ in range(5):  # warm up both
            one_turn(client, sqlite.url)
            one_turn(client, postgres.url)
        on_sqlite, on_postgres = [], []
        for _ in range(turns):
            on_sqlite.append(one_turn(client, sqlite.url) * 1000)
            on_postgres.append(one_turn(client, postgres.url) * 1000)
    return on_sqlite, on_postgres


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=120)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--latency-turns", type=int, default=40)
    args = parser.parse_args()
    cpus = os.cpu_count()
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({cpus} CPUs)")
    pg = PostgresServer().start()
    upstream = FakeUpstreamProcess()
    targets = Targets("bench/replicas.py")
    try:
        print(f"1. agent turns through HAProxy, {args.clients} clients at once, {args.turns} turns:")
        rates = {}
        for count in (1, 2, 3):
            rates[count] = cluster_throughput(pg, upstream, count, args.turns, args.clients)
            print(f"  {count} replica{'s' if count > 1 else ' '}: {rates[count]:7.1f} turns/s   "
                  f"(x{rates[count] / rates[1]:.2f} of one; load average {os.getloadavg()[0]:.2f})")
        print(f"  on {cpus} CPUs shared by every replica, PostgreSQL, HAProxy, the upstream and the clients, "
              "the ceiling is the cores, not Ghost")
        print("2. one client's turn, straight to one Ghost, SQLite and PostgreSQL alternated:")
        on_sqlite, on_postgres = latencies(pg, upstream, args.latency_turns)
        for name, times in (("SQLite", on_sqlite), ("PostgreSQL", on_postgres)):
            print(f"  {name:10} median {statistics.median(times):7.2f} ms   p90 {percentile(times, 90):7.2f} ms "
                  f"(n={len(times)})")
        added = statistics.median(on_postgres) - statistics.median(on_sqlite)
        print(f"  added by PostgreSQL: {added:+.2f} ms per turn")
    finally:
        upstream.stop()
        pg.remove()
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    # Targets: replicas must not cost throughput (on 2 cores they cannot add much), and the
    # shared store must add little to a turn.
    targets.check(rates[2] >= 0.8 * rates[1] and rates[3] >= 0.8 * rates[1],
                  f"2 and 3 replicas keep >= 80% of one's throughput: x{rates[2] / rates[1]:.2f}, "
                  f"x{rates[3] / rates[1]:.2f}", ">= x0.80 on 2 cores")
    targets.check(added <= 15.0, f"PostgreSQL adds {added:+.2f} ms to a turn", "<= 15 ms")
    return targets.finish()


if __name__ == "__main__":
    raise SystemExit(main())
