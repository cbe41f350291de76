"""The bundled model: tokens per second read through Ghost vs straight from its model server, the
start-up time of `ghost serve` with no upstream, and what the start-up warm-up saves the first chat.

    python bench/embedded.py [--runs 5] [--tokens 128] [--starts 3] [--threads 0]

1. Start-up and first chat: `ghost serve` (fresh home, no upstream) started with the warm-up
   (the start-up self-test, `--embedded-self-test on`, the default) and without it (`off`),
   alternately: spawn -> Ghost answering, spawn -> the first chat answered, and that first chat's
   time to first token. The first chat is a user's question through Ghost's agent (its system
   prompt and tools), streamed.
2. Relay: the same `/v1/completions` request (temperature 0, exactly N tokens via min_tokens)
   through Ghost's proxy and straight to the model server, interleaved. Same tokens both ways, so
   the ratio is Ghost's cost alone.
3. Chat: Ghost's agent turn (`/v1/chat/completions`) vs the model server's chat endpoint given
   the very request Ghost sends upstream (its system prompt and tools; captured once on the fake
   upstream), interleaved, temperature 0, `tool_choice: "none"`: the same work for the model both
   ways.

Targets (a verdict line each; the exit status is 1 if any is missed): relay and chat decode
through Ghost >= 95 % of direct; the first chat's time to first token with the warm-up <= 50 % of
without; spawn -> first chat answered with the warm-up <= 125 % of without (the warm-up moves the
prompt's reading to start-up, it must not add much to it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _common import FakeUpstreamProcess, GhostServer, median, table, Targets

PROMPT = "Write a short story about a robot who learns to paint."
QUESTION = [{"role": "user", "content": PROMPT}]


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


def model_server(ghost: GhostServer) -> tuple[str, dict[str, str]]:
    """The model server's URL and the headers Ghost sends it (it answers only Ghost: its key)."""
    health = httpx.get(ghost.url + "/api/health", headers=ghost.headers, timeout=10).json()
    info = health["embedded_model"]
    return info["url"], model_server_headers(info["pid"])


FIRST_CHAT = [{"role": "user", "content": "What is 2+2?"}]


def first_chat(warm_up: bool) -> tuple[float, float, float]:
    """(spawn -> answering, spawn -> first chat answered, its time to first token) of one start."""
    server = GhostServer("--embedded-self-test", "on" if warm_up else "off",
                         home=Path(tempfile.mkdtemp(prefix="ghost-bench-")))
    began = time.perf_counter()
    server.start(timeout=600)
    try:
        ready = time.perf_counter() - began
        body = {"messages": FIRST_CHAT, "max_tokens": 16, "temperature": 0, "stream": True}
        ttft, _, _ = read_stream(server.url + "/v1/chat/completions", server.headers, body)
        return ready, time.perf_counter() - began, ttft
    finally:
        server.stop()


def startup(starts: int) -> dict[str, float]:
    samples: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
    for _ in range(starts):
        for warm_up in (True, False):  # alternately: the machine's load hits both alike
            samples[warm_up].append(first_chat(warm_up))
    rows, got = [], {}
    for warm_up, label in ((True, "warm-up on (default)"), (False, "warm-up off")):
        ready, answered, ttft = (median([s[i] for s in samples[warm_up]]) for i in range(3))
        got[label] = (ready, answered, ttft)
        rows.append([label, f"{ready:.2f}", f"{answered:.2f}", f"{ttft:.2f}"])
    table(f"Start-up of `ghost serve` with the bundled model, and its first chat (median of {starts}, fresh home each)",
          ["start", "spawn -> answering (s)", "spawn -> first chat answered (s)", "first chat: time to first token (s)"],
          rows)
    on, off = got["warm-up on (default)"], got["warm-up off"]
    return {"first_ttft_ratio": on[2] / off[2], "answered_ratio": on[1] / off[1]}


def relay(ghost: GhostServer, runs: int, tokens: int) -> float:
    body = {"prompt": PROMPT, "max_tokens": tokens, "min_tokens": tokens, "temperature": 0,
            "seed": 1, "stream": True}
    url, headers = model_server(ghost)
    targets = {"direct model server": (url + "/v1/completions", headers),
               "through Ghost (proxy)": (ghost.url + "/v1/completions", ghost.headers)}
    samples = interleave(targets, body, runs)
    rates = {name: [s[2] / s[1] for s in got] for name, got in samples.items()}
    base = median(rates["direct model server"])
    ratio = median(rates["through Ghost (proxy)"]) / base
    table(f"Relay: /v1/completions, {tokens} tokens, median of {runs} interleaved runs",
          ["path", "tokens/s (whole reply)", "decode tokens/s", "time to first token (ms)", "vs direct"],
          [[name, f"{median(rates[name]):.1f}", f"{median([decode_rate(s) for s in got]):.1f}",
            f"{median([s[0] for s in got]) * 1000:.0f}", f"{median(rates[name]) / base:.1%}"]
           for name, got in samples.items()])
    return ratio


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


def chat(ghost: GhostServer, runs: int, tokens: int) -> float:
    # tool_choice "none": the same generation both ways, whichever tool the model would fancy.
    body = {"messages": QUESTION, "max_tokens": tokens, "temperature": 0, "seed": 1, "stream": True,
            "tool_choice": "none"}
    same = upstream_body(body)
    url, headers = model_server(ghost)
    targets = {"direct model server (Ghost's upstream request)": (url + "/v1/chat/completions", headers),
               "through Ghost's agent turn": (ghost.url + "/v1/chat/completions", ghost.headers)}
    samples = interleave(targets, same, runs, bodies={"through Ghost's agent turn": body})
    rates = {name: [decode_rate(s) for s in got] for name, got in samples.items()}
    base = median(rates["direct model server (Ghost's upstream request)"])
    ratio = median(rates["through Ghost's agent turn"]) / base
    table(f"Chat: up to {tokens} tokens, median of {runs} interleaved runs "
          f"(the direct request is the one Ghost sends upstream: its system prompt and {len(same.get('tools') or [])} tools)",
          ["path", "decode tokens/s", "tokens", "time to first token (ms)", "decode vs direct"],
          [[name, f"{median(rates[name]):.1f}", f"{median([s[2] for s in got]):.0f}",
            f"{median([s[0] for s in got]) * 1000:.0f}", f"{median(rates[name]) / base:.1%}"]
           for name, got in samples.items()])
    return ratio


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
    checks = []
    if args.starts:
        starts = startup(args.starts)
        checks += [("first chat's time to first token, warm-up on vs off", starts["first_ttft_ratio"], "<=", 0.50),
                   ("spawn -> first chat answered, warm-up on vs off", starts["answered_ratio"], "<=", 1.25)]
    home = Path(tempfile.mkdtemp(prefix="ghost-bench-"))
    ghost = GhostServer("--embedded-threads", str(args.threads), "--embedded-self-test", "on", home=home)
    ghost.start(timeout=600)  # the self-test reads ~700 tokens: over a minute on a busy machine
    try:
        checks.append(("relay tokens/s through Ghost's proxy vs direct", relay(ghost, args.runs, args.tokens), ">=", 0.95))
        checks.append(("chat decode tokens/s through Ghost's agent vs direct", chat(ghost, args.runs, args.tokens), ">=", 0.95))
    finally:
        ghost.stop()
    return verdict(checks)


def verdict(checks: list[tuple[str, float, str, float]]) -> int:
    targets = Targets("bench/embedded.py")
    for name, got, op, target in checks:
        targets.check(got <= target if op == "<=" else got >= target, f"{name}: {got:.0%}", f"{op} {target:.0%}")
    return targets.finish()


if __name__ == "__main__":
    sys.exit(main())
