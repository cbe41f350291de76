"""The bundled model: tokens per second read through Ghost vs straight from its model server, and
the start-up time of `ghost serve` with no upstream.

    python bench/embedded.py [--runs 5] [--tokens 128] [--starts 3] [--threads 0]

1. Start-up: from spawning `ghost serve` (fresh home, no upstream) to Ghost answering, and to the
   first answered chat request.
2. Relay: the same `/v1/completions` request (temperature 0, exactly N tokens via min_tokens)
   through Ghost's proxy and straight to the model server, interleaved. Same tokens both ways, so
   the ratio is Ghost's cost alone.
3. Chat: Ghost's agent turn (`/v1/chat/completions`) vs the model server's chat endpoint given
   the very request Ghost sends upstream (its system prompt and tools; captured once on the fake
   upstream), interleaved, temperature 0, `tool_choice: "none"`: the same work for the model both
   ways.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import httpx
from _common import FakeUpstreamProcess, GhostServer, Targets, median, table

PROMPT = "Write a short story about a robot who learns to paint."
QUESTION = [{"role": "user", "content": PROMPT}]
SHARE_OF_DIRECT = 0.95  # the target: tokens/s through Ghost vs straight from the model server


def read_stream(url: str, headers: dict[str, str], body: dict) -> tuple[float, float, int]:
    """(time to first token, time of last token, tokens) of one streamed reply, from the request."""
    started = time.perf_counter()
    first = last = 0.0
    tokens = 0
    with httpx.stream("POST", url, headers=headers, json=body, timeout=300) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            choice = (json.loads(line[6:]).get("choices") or [{}])[0]
            text = choice.get("text") or (choice.get("delta") or {}).get("content")
            if text:
                last = time.perf_counter() - started
                tokens += 1
                first = first or last
    return first, last, tokens


def decode_rate(sample: tuple[float, float, int]) -> float:
    first, last, tokens = sample
    return (tokens - 1) / (last - first) if tokens > 1 and last > first else 0.0


def model_url(ghost: GhostServer) -> str:
    health = httpx.get(ghost.url + "/api/health", headers=ghost.headers, timeout=10).json()
    return health["embedded_model"]["url"]


def startup(starts: int) -> None:
    rows = []
    for _ in range(starts):
        server = GhostServer(home=Path(tempfile.mkdtemp(prefix="ghost-bench-")))
        began = time.perf_counter()
        server.start(timeout=300)
        ready = time.perf_counter() - began
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "stream": False}
        httpx.post(server.url + "/v1/chat/completions", headers=server.headers, json=body,
                   timeout=300).raise_for_status()
        answered = time.perf_counter() - began
        server.stop()
        rows.append((ready, answered))
    table(f"Start-up of `ghost serve` with the bundled model (median of {starts}, fresh home each)",
          ["measure", "seconds"],
          [["spawn -> Ghost answering HTTP (model server started and ready)", f"{median([r for r, _ in rows]):.2f}"],
           ["spawn -> first answered chat request", f"{median([a for _, a in rows]):.2f}"]])


def relay(ghost: GhostServer, runs: int, tokens: int, verdicts: Targets) -> None:
    body = {"prompt": PROMPT, "max_tokens": tokens, "min_tokens": tokens, "temperature": 0,
            "seed": 1, "stream": True}
    targets = {"direct model server": (model_url(ghost) + "/v1/completions", {}),
               "through Ghost (proxy)": (ghost.url + "/v1/completions", ghost.headers)}
    samples = interleave(targets, body, runs)
    rates = {name: [s[2] / s[1] for s in got] for name, got in samples.items()}
    base = median(rates["direct model server"])
    table(f"Relay: /v1/completions, {tokens} tokens, median of {runs} interleaved runs",
          ["path", "tokens/s (whole reply)", "decode tokens/s", "time to first token (ms)", "vs direct"],
          [[name, f"{median(rates[name]):.1f}", f"{median([decode_rate(s) for s in got]):.1f}",
            f"{median([s[0] for s in got]) * 1000:.0f}", f"{median(rates[name]) / base:.1%}"]
           for name, got in samples.items()])
    share = median(rates["through Ghost (proxy)"]) / base
    verdicts.check(share >= SHARE_OF_DIRECT, f"relay: {share:.1%} of direct tokens/s", f">= {SHARE_OF_DIRECT:.0%}")


def upstream_body(body: dict) -> dict:
    """The exact request Ghost's agent turn sends upstream for `body` (captured on the fake)."""
    fake = FakeUpstreamProcess()
    try:
        with GhostServer("--upstream-url", fake.url, home=Path(tempfile.mkdtemp(prefix="ghost-bench-"))) as ghost:
            httpx.post(ghost.url + "/v1/chat/completions", headers=ghost.headers, json=body,
                       timeout=60).raise_for_status()
        sent = httpx.get(fake.url + "/_fake/requests").json()
        return [r for r in sent if r["path"] == "/v1/chat/completions"][-1]["body"]
    finally:
        fake.stop()


def chat(ghost: GhostServer, runs: int, tokens: int, verdicts: Targets) -> None:
    # tool_choice "none": the same generation both ways, whichever tool the model would fancy.
    body = {"messages": QUESTION, "max_tokens": tokens, "temperature": 0, "seed": 1, "stream": True,
            "tool_choice": "none"}
    same = upstream_body(body)
    targets = {"direct model server (Ghost's upstream request)": (model_url(ghost) + "/v1/chat/completions", {}),
               "through Ghost's agent turn": (ghost.url + "/v1/chat/completions", ghost.headers)}
    samples = interleave(targets, same, runs, bodies={"through Ghost's agent turn": body})
    rates = {name: [decode_rate(s) for s in got] for name, got in samples.items()}
    base = median(rates["direct model server (Ghost's upstream request)"])
    table(f"Chat: up to {tokens} tokens, median of {runs} interleaved runs "
          f"(the direct request is the one Ghost sends upstream: its system prompt and {len(same.get('tools') or [])} tools)",
          ["path", "decode tokens/s", "tokens", "time to first token (ms)", "decode vs direct"],
          [[name, f"{median(rates[name]):.1f}", f"{median([s[2] for s in got]):.0f}",
            f"{median([s[0] for s in got]) * 1000:.0f}", f"{median(rates[name]) / base:.1%}"]
           for name, got in samples.items()])
    share = median(rates["through Ghost's agent turn"]) / base
    verdicts.check(share >= SHARE_OF_DIRECT, f"chat: {share:.1%} of direct decode tokens/s", f">= {SHARE_OF_DIRECT:.0%}")


def interleave(targets: dict[str, tuple[str, dict[str, str]]], body: dict, runs: int,
               bodies: dict[str, dict] | None = None) -> dict[str, list[tuple[float, float, int]]]:
    bodies = {name: (bodies or {}).get(name, body) for name in targets}
    samples: dict[str, list[tuple[float, float, int]]] = {name: [] for name in targets}
    for name, (url, headers) in targets.items():
        read_stream(url, headers, bodies[name])  # warm-up: caches, first-request costs
    for _ in range(runs):
        for name, (url, headers) in targets.items():
            samples[name].append(read_stream(url, headers, bodies[name]))
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="--embedded-threads for Ghost (0: its default, half the cores)")
    args = parser.parse_args()
    if args.starts:
        startup(args.starts)
    home = Path(tempfile.mkdtemp(prefix="ghost-bench-"))
    verdicts = Targets("bench/embedded.py")
    with GhostServer("--embedded-threads", str(args.threads), home=home) as ghost:
        relay(ghost, args.runs, args.tokens, verdicts)
        chat(ghost, args.runs, args.tokens, verdicts)
    return verdicts.finish()


if __name__ == "__main__":
    raise SystemExit(main())
