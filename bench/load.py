"""Load: 100 concurrent streaming chats plus proxy traffic against Ghost on the fake upstream.

    python bench/load.py [--seconds 60] [--chats 100] [--proxy 10] [--rounds 3]

Each round holds the given number of streaming chats open for the given time (each chat is a
paced reply of 40 tokens at 25 ms), alongside proxy requests. It reports per round: turns and
proxy requests done, errors by kind (429s counted apart, as intended back-pressure), time to first
token, Ghost's event-loop lag (from /api/health) and RSS. Between rounds Ghost idles; RSS after
each round shows whether memory returns to its baseline.

Targets (a verdict line each; exit status 1 on a miss): no unintended error in any round (429s are
intended back-pressure and counted apart); RSS after the last round within 10 % of RSS after the
first one (the first round's growth is warm pools and caches; growth beyond it is a leak).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time

import httpx
from _common import FakeUpstreamProcess, GhostServer, Targets, median, percentile, rss_kb, table

USER = [{"role": "user", "content": "load"}]
REPLY = {"chunks": [f"t{i} " for i in range(40)], "content": "", "delay": 0.025}
RSS_GROWTH_AFTER_FIRST_ROUND = 0.10


class Tally:
    def __init__(self) -> None:
        self.turns = 0
        self.proxied = 0
        self.busy = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.ttft: list[float] = []


async def chat_worker(client: httpx.AsyncClient, ghost: GhostServer, path: str, until: float, tally: Tally) -> None:
    while time.monotonic() < until:
        started = time.perf_counter()
        try:
            async with client.stream("POST", ghost.url + path, headers=ghost.headers,
                                     json={"model": "fake-model", "messages": USER, "stream": True}) as response:
                if response.status_code == 429:
                    tally.busy += 1
                    await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                    continue
                if response.status_code != 200:
                    tally.errors[f"status {response.status_code}"] += 1
                    continue
                first = True
                async for line in response.aiter_lines():
                    if first and "t0" in line:
                        tally.ttft.append(time.perf_counter() - started)
                        first = False
                    if '"error"' in line:
                        tally.errors["in-band error"] += 1
            tally.turns += 1
        except httpx.HTTPError as exc:
            tally.errors[type(exc).__name__] += 1


async def proxy_worker(client: httpx.AsyncClient, ghost: GhostServer, until: float, tally: Tally) -> None:
    body = b"x" * 4096
    while time.monotonic() < until:
        try:
            response = await client.post(ghost.url + "/echo/load?x=1", headers=ghost.headers, content=body)
            if response.status_code != 200 or response.json()["size"] != len(body):
                tally.errors[f"proxy status {response.status_code}"] += 1
            tally.proxied += 1
        except httpx.HTTPError as exc:
            tally.errors[f"proxy {type(exc).__name__}"] += 1


async def keep_replies_queued(fake: FakeUpstreamProcess, until: float) -> None:
    """The fake answers with its default reply when its script runs dry: set a paced one. A new
    connection each time: the fake closes idle ones after 5 s, which is also httpx's idle expiry,
    and a loaded bench can reuse one just as the fake closes it."""
    async with httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0)) as client:
        while time.monotonic() < until:
            await client.post(fake.url + "/_fake/script", json=[REPLY] * 200)
            await asyncio.sleep(1.0)
            await client.post(fake.url + "/_fake/reset")


async def sample_health(ghost: GhostServer, until: float, lags: list[float], rss: list[int]) -> None:
    async with httpx.AsyncClient(headers=ghost.headers) as client:
        while time.monotonic() < until:
            health = (await client.get(ghost.url + "/api/health")).json()
            lags.append(health["event_loop_lag"]["max_ms"])
            assert ghost.process is not None
            rss.append(rss_kb(ghost.process.pid))
            await asyncio.sleep(2.0)


async def one_round(fake: FakeUpstreamProcess, ghost: GhostServer, args: argparse.Namespace) -> tuple[Tally, list[float], list[int]]:
    tally, lags, rss = Tally(), [], []
    until = time.monotonic() + args.seconds
    limits = httpx.Limits(max_connections=args.chats + args.proxy + 10)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        paths = ["/v1/chat/completions", "/api/chat"]
        await asyncio.gather(
            keep_replies_queued(fake, until),
            sample_health(ghost, until, lags, rss),
            *(chat_worker(client, ghost, paths[i % 2], until, tally) for i in range(args.chats)),
            *(proxy_worker(client, ghost, until, tally) for _ in range(args.proxy)),
        )
    return tally, lags, rss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--chats", type=int, default=100)
    parser.add_argument("--proxy", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    fake = FakeUpstreamProcess()
    rows, afters = [], []
    verdicts = Targets("bench/load.py")
    try:
        with GhostServer("--upstream-url", fake.url, "--log-level", "warning",
                         "--max-concurrent-turns", str(args.chats)) as ghost:
            assert ghost.process is not None
            httpx.post(ghost.url + "/v1/chat/completions", headers=ghost.headers,
                       json={"model": "fake-model", "messages": USER})  # warm-up
            baseline = rss_kb(ghost.process.pid)
            for number in range(1, args.rounds + 1):
                tally, lags, rss = asyncio.run(one_round(fake, ghost, args))
                time.sleep(3)
                after = rss_kb(ghost.process.pid)
                afters.append(after)
                verdicts.check(not tally.errors, f"round {number}: unintended errors: {dict(tally.errors) or 'none'}",
                               "none")
                ttft = [t * 1000 for t in tally.ttft] or [0.0]
                rows.append([number, tally.turns, tally.proxied, tally.busy, dict(tally.errors) or "none",
                             f"{median(ttft):.1f} / {percentile(ttft, 99):.1f}", f"{max(lags or [0]):.1f}",
                             f"{max(rss or [0]) / 1024:.1f}", f"{after / 1024:.1f}"])
            table(f"Load: {args.chats} streaming chats + {args.proxy} proxy clients, {args.seconds:.0f} s a round "
                  f"(baseline RSS {baseline / 1024:.1f} MB)",
                  ["round", "turns", "proxied", "429s", "errors", "TTFT p50/p99 ms", "loop lag max ms",
                   "peak RSS MB", "RSS after MB"], rows)
    finally:
        fake.stop()
    if len(afters) >= 2:
        growth = afters[-1] / afters[0] - 1
        verdicts.check(growth <= RSS_GROWTH_AFTER_FIRST_ROUND,
                       f"RSS after the last round vs the first: {growth:+.1%}", f"<= +{RSS_GROWTH_AFTER_FIRST_ROUND:.0%}")
    return verdicts.finish()


if __name__ == "__main__":
    sys.exit(main())
