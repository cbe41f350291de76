"""Users: what knowing many of them costs a turn, and what a user's first request costs.

One real Ghost (bubblewrap sandbox, SQLite) on the scripted fake upstream, over HTTP:

1. An agent turn's wall time (no tool call; the fake answers at once) with the admin's key — the
   baseline, same run: no user lookup — and with a user's key while 1 user is known, then while
   1,000 are known. The user's key is looked up by its hash (one primary-key probe), so the two
   user numbers should be the same; their difference from the baseline is the lookup plus the
   per-user turn accounting.
2. A user's first request (its workspace opened: sandbox folder, executor, skills scan, MCP
   setup) against its second request (workspace open), for fresh end users of a frontend key.

    python bench/users.py [--turns 200] [--first 20]

Numbers on a shared machine are inflated: the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from _common import Targets
from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer


def turn_times(client: httpx.Client, turns: int) -> list[float]:
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
    times = []
    for _ in range(turns):
        started = time.perf_counter()
        reply = client.post("/v1/chat/completions", json=body)
        times.append(time.perf_counter() - started)
        assert reply.status_code == 200, reply.text
    return times


def alternated(a: httpx.Client, b: httpx.Client, turns: int) -> tuple[list[float], list[float]]:
    """One turn of each in turn, so both see the same machine load."""
    times_a, times_b = [], []
    for _ in range(turns):
        times_a += turn_times(a, 1)
        times_b += turn_times(b, 1)
    return times_a, times_b


def summary(name: str, times: list[float]) -> float:
    median = statistics.median(times) * 1000
    p90 = statistics.quantiles(times, n=10)[-1] * 1000 if len(times) >= 10 else max(times) * 1000
    print(f"  {name:44} median {median:7.2f} ms   p90 {p90:7.2f} ms   (n={len(times)})")
    return median


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--first", type=int, default=20)
    args = parser.parse_args()
    upstream = FakeUpstream().start()
    upstream.responder = lambda body: Reply(content="ok")
    home = Path(tempfile.mkdtemp(prefix="ghost-bench-users-"))
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    with GhostServer("--upstream-url", upstream.url, "--user-turns-per-minute", "0",
                     "--user-max-concurrent-turns", "0", home=home) as server:
        admin = httpx.Client(base_url=server.url, headers=server.headers, timeout=60)
        made = admin.post("/api/users", json={"name": "bench-user"}).json()
        user = httpx.Client(base_url=server.url, headers={"X-Ghost-Key": made["key"]}, timeout=60)
        turn_times(admin, 20), turn_times(user, 20)  # warm up both workspaces
        print("1. agent turn over HTTP (fake upstream answering at once), admin and user turns alternated:")
        base_times, one_times = alternated(admin, user, args.turns)
        base = summary("admin key (baseline: no lookup)", base_times)
        one = summary("user key, 1 user known", one_times)
        for n in range(999):
            assert admin.post("/api/users", json={"name": f"filler-{n:04d}"}).status_code == 201
        base_times, thousand_times = alternated(admin, user, args.turns)
        base2 = summary("admin key (baseline, 1,000 users known)", base_times)
        thousand = summary("user key, 1,000 users known", thousand_times)
        added_one, added_thousand = one - base, thousand - base2
        print(f"  added by a user's key: {added_one:+.2f} ms (1 user), {added_thousand:+.2f} ms (1,000 users)")

        print("2. a user's first request (workspace opened) vs its second:")
        front = admin.post("/api/users", json={"name": "bench-frontend", "role": "frontend"}).json()["key"]
        first, second = [], []
        for _ in range(args.first):
            headers = {"X-Ghost-Key": front, "X-OpenWebUI-User-Id": f"u-{uuid.uuid4().hex[:12]}"}
            with httpx.Client(base_url=server.url, headers=headers, timeout=60) as end_user:
                for bucket in (first, second):
                    started = time.perf_counter()
                    assert end_user.get("/api/sessions").status_code == 200
                    bucket.append(time.perf_counter() - started)
        opened = summary("first request (user created, workspace opened)", first)
        again = summary("second request", second)
        print(f"  workspace creation: {opened - again:.2f} ms")
    upstream.stop()
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    targets = Targets("bench/users.py")
    targets.check(added_thousand - added_one <= 2.0, f"1,000 users known vs 1: {added_thousand - added_one:+.2f} ms "
                  "added per turn", "<= 2 ms: the lookup does not grow with users")
    targets.check(opened - again <= 500.0, f"workspace creation {opened - again:.1f} ms", "<= 500 ms")
    return targets.finish()


if __name__ == "__main__":
    raise SystemExit(main())
