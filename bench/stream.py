"""Streaming through Ghost's agent turn vs straight from the same upstream, interleaved in one run.

    python bench/stream.py [--runs 7]

Paths: the upstream directly, and through Ghost on /v1/chat/completions (the agent model, and its
`-plain` variant, which relays the upstream's own chunks), /api/chat, the Responses API's
/v1/responses (typed events) and Anthropic's /v1/messages.

1. Relay ceiling: a 2,000-token reply from an upstream that emits as fast as it can.
2. Paced upstream at 200 tokens/s: throughput ratio and time to first token.
3. A turn with 3 tool rounds of `execute`: Ghost's own time per round (total - upstream - sandbox).

Targets (a verdict line each; exit status 1 on a miss): relay ceiling >= 10,000 tokens/s through
each Ghost path; paced throughput >= 98 % of direct and time to first token <= +5 ms (p50).
"""

from __future__ import annotations

import argparse
import time

from _common import FakeUpstreamProcess, GhostServer, Targets, bench_client, median, percentile, table

CLIENT = bench_client()

USER = [{"role": "user", "content": "go"}]
CEILING_TOKENS_S = 10_000
PACED_SHARE = 0.98
PACED_TTFT_ADDED_MS = 5.0


def read_stream(url: str, headers: dict[str, str], body: dict, ndjson: bool) -> tuple[float, float, int]:
    """(time to first token, total seconds, tokens seen) for one streamed reply."""
    marker = '"t"'  # every scripted token is the string "t" (a Responses `delta` too; its done events join them)
    started = time.perf_counter()
    first = 0.0
    tokens = 0
    with CLIENT.stream("POST", url, headers=headers, json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if marker in line:
                tokens += 1
                if tokens == 1:
                    first = time.perf_counter() - started
    return first, time.perf_counter() - started, tokens


CHAT_BODY = {"model": "fake-model", "messages": USER, "stream": True}
# store: false, as a relay measurement should not time the database (stored: one insert per reply).
RESPONSES_BODY = {"model": "fake-model", "input": "go", "stream": True, "store": False}
MESSAGES_BODY = {**CHAT_BODY, "max_tokens": 8192}  # Anthropic's API requires max_tokens


def targets(fake: FakeUpstreamProcess, ghost: GhostServer) -> dict[str, tuple[str, dict[str, str], bool, dict]]:
    return {
        "direct upstream": (fake.url + "/v1/chat/completions", {}, False, CHAT_BODY),
        "ghost /v1/chat/completions": (ghost.url + "/v1/chat/completions", ghost.headers, False, CHAT_BODY),
        "ghost /v1/chat/completions -plain": (ghost.url + "/v1/chat/completions", ghost.headers, False,
                                              {**CHAT_BODY, "model": "fake-model-plain"}),
        "ghost /api/chat": (ghost.url + "/api/chat", ghost.headers, True, CHAT_BODY),
        "ghost /v1/responses": (ghost.url + "/v1/responses", ghost.headers, False, RESPONSES_BODY),
        "ghost /v1/messages": (ghost.url + "/v1/messages", ghost.headers, False, MESSAGES_BODY),
    }



def run_scenario(fake: FakeUpstreamProcess, ghost: GhostServer, reply: dict, runs: int) -> dict[str, list[tuple[float, float, int]]]:
    results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in targets(fake, ghost)}
    for _ in range(runs):
        for name, (url, headers, ndjson, body) in targets(fake, ghost).items():  # interleaved
            fake.script(reply)
            results[name].append(read_stream(url, headers, body, ndjson))
    return results


def ceiling(fake: FakeUpstreamProcess, ghost: GhostServer, runs: int, verdicts: Targets) -> None:
    reply = {"chunks": ["t"] * 2000, "content": ""}
    results = run_scenario(fake, ghost, reply, runs)
    rows = []
    for name, samples in results.items():
        rates = [tokens / total for _, total, tokens in samples]
        per_token_us = [total / tokens * 1e6 for _, total, tokens in samples]
        rows.append([name, f"{median(rates):,.0f}", f"{median(per_token_us):.1f}", samples[0][2]])
        if name.startswith("ghost"):
            verdicts.check(median(rates) >= CEILING_TOKENS_S, f"relay ceiling {name}: {median(rates):,.0f} tokens/s",
                           f">= {CEILING_TOKENS_S:,}")
    table("1. Relay ceiling: 2,000 tokens as fast as the upstream can", ["path", "tokens/s (median)", "µs/token", "tokens"], rows)


def paced(fake: FakeUpstreamProcess, ghost: GhostServer, runs: int, verdicts: Targets) -> None:
    reply = {"chunks": ["t"] * 200, "content": "", "delay": 0.005}
    results = run_scenario(fake, ghost, reply, runs)
    direct = results["direct upstream"]
    direct_rate = median([tokens / total for _, total, tokens in direct])
    direct_ttft = median([first for first, _, _ in direct])
    rows = []
    for name, samples in results.items():
        rate = median([tokens / total for _, total, tokens in samples])
        ttfts = [first * 1000 for first, _, _ in samples]
        rows.append([name, f"{rate:,.1f}", f"{rate / direct_rate * 100:.1f} %", f"{median(ttfts):.2f}",
                     f"{percentile(ttfts, 95):.2f}", f"{median(ttfts) - direct_ttft * 1000:+.2f}"])
        if name.startswith("ghost"):
            added = median(ttfts) - direct_ttft * 1000
            verdicts.check(rate / direct_rate >= PACED_SHARE, f"paced throughput {name}: {rate / direct_rate:.1%} of direct",
                           f">= {PACED_SHARE:.0%}")
            verdicts.check(added <= PACED_TTFT_ADDED_MS, f"paced TTFT added {name}: {added:+.2f} ms p50",
                           f"<= +{PACED_TTFT_ADDED_MS:g} ms")
    table("2. Paced upstream, 200 tokens/s (200 tokens)",
          ["path", "tokens/s", "vs direct", "TTFT p50 ms", "TTFT p95 ms", "TTFT added ms"], rows)


def server_timing(header: str) -> dict[str, float]:
    """Seconds per metric of a Server-Timing header (`name;dur=ms, ...`)."""
    out = {}
    for metric in header.split(","):
        name, _, rest = metric.strip().partition(";")
        if rest.startswith("dur="):
            out[name] = float(rest[4:]) / 1000
    return out


def tool_rounds(fake: FakeUpstreamProcess, ghost: GhostServer, runs: int) -> None:
    call = {"name": "execute", "arguments": {"language": "python", "code": "print(1)"}}
    rows = []
    totals, owns = [], []
    for _ in range(runs):
        fake.reset()
        fake.script(*([{"content": "", "tool_calls": [call]}] * 3), {"content": "done"})
        started = time.perf_counter()
        response = CLIENT.post(ghost.url + "/v1/chat/completions", headers=ghost.headers,
                               json={"model": "fake-model", "messages": USER})
        total = time.perf_counter() - started
        response.raise_for_status()
        timing = server_timing(response.headers.get("server-timing", ""))
        upstream_s, tools_s = timing.get("upstream", 0.0), timing.get("tools", 0.0)
        totals.append(total * 1000)
        owns.append((total - upstream_s - tools_s) / 3 * 1000)
    rows.append(["3 rounds of execute(print(1))", f"{median(totals):.1f}", f"{median(owns):.2f}", f"{percentile(owns, 95):.2f}"])
    table("3. Agent turn with 3 tool rounds", ["turn", "total ms (p50)", "Ghost's own ms/round (p50)", "p95"], rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    fake = FakeUpstreamProcess()
    verdicts = Targets("bench/stream.py")
    try:
        with GhostServer("--upstream-url", fake.url, "--log-level", "warning") as ghost:
            for name, (url, headers, ndjson, body) in targets(fake, ghost).items():  # warm-up
                fake.script({"content": "warm up"})
                read_stream(url, headers, body, ndjson)
            ceiling(fake, ghost, args.runs, verdicts)
            paced(fake, ghost, args.runs, verdicts)
            tool_rounds(fake, ghost, args.runs)
    finally:
        fake.stop()
    return verdicts.finish()


if __name__ == "__main__":
    raise SystemExit(main())
