"""What does Ghost add to an MCP tool call, and what does the sandbox cost a server's start?

Run: .venv/bin/python bench/mcp.py [--calls 300] [--starts 5]

The server is the toy server of the tests (written with the official SDK), tool `echo`.

Calls, interleaved in one loop so machine noise hits both alike, once the servers run:
  direct SDK client - the SDK's `Client` over its own stdio transport to an unsandboxed copy
                      of the server (the floor: what any MCP client pays)
  through Ghost     - Ghost's registry dispatching `toy__echo` to its sandboxed copy: argument
                      parsing, routing, the concurrency slot, the call timeout, Ghost's stdio
                      transport, the result conversion and cap. THE row the target applies to.
Start-up, interleaved: from nothing to initialised with its tools listed, sandboxed (bubblewrap,
limits, cgroup) against unsandboxed, both through Ghost, and the SDK's own stdio start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

# This file is called mcp.py: its own directory first on sys.path would hide the SDK's package.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent / "src"))

from mcp import Client, StdioServerParameters  # noqa: E402

sys.path.append(str(HERE))  # the SDK is imported now; the bench's helpers can be found again
from _common import Targets, start_toolbox  # noqa: E402

from ghost.config import Settings  # noqa: E402
from ghost.mcp.config import parse_config  # noqa: E402
from ghost.mcp.provider import McpTools  # noqa: E402
from ghost.mcp.setup import limits_from  # noqa: E402
from ghost.tools.base import ToolContext  # noqa: E402
from ghost.tools.registry import Registry  # noqa: E402

TOY = Path(__file__).resolve().parents[1] / "tests" / "mcp_toy_server.py"
TARGET_ADDED_MS = 5.0


def entry(home: Path, name: str, sandbox: bool) -> dict[str, object]:
    directory = home / "mcp" / name
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(TOY, directory / "toy.py")
    script = "/sandbox/toy.py" if sandbox else str(directory / "toy.py")
    return {"command": sys.executable, "args": [script], "sandbox": sandbox}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def build(home: Path, stack: AsyncExitStack) -> tuple[Registry, McpTools]:
    settings = Settings(home=home, sandbox_backend="bwrap", mcp_start_timeout=120)
    workspace, toolbox = await start_toolbox(settings, stack)
    mcp = McpTools(limits_from(settings), toolbox.executor, home / "mcp", workspace.sandbox_root,
                   settings.mcp_message_max_bytes, home / "mcp.json")
    stack.push_async_callback(mcp.aclose)
    toolbox.registry.add_provider(mcp)
    return toolbox.registry, mcp


async def bench_calls(home: Path, registry: Registry, mcp: McpTools, calls: int) -> dict[str, list[float]]:
    await mcp.apply(parse_config(json.dumps({"mcpServers": {"toy": entry(home, "toy", True)}}).encode()))
    assert mcp.servers["toy"].state == "ready", mcp.servers["toy"].error
    context = ToolContext("bench", "bench")
    direct_entry = entry(home, "direct", False)
    samples: dict[str, list[float]] = {"direct SDK client": [], "through Ghost": []}
    params = StdioServerParameters(command=sys.executable, args=[str(direct_entry["args"][0])])  # type: ignore[index]
    async with Client(params) as client:
        for round_ in range(calls + 20):  # the first 20 warm up and are not counted
            started = time.perf_counter()
            direct = await client.call_tool("echo", {"text": "hi"})
            middle = time.perf_counter()
            ghost = await registry.call("toy__echo", '{"text": "hi"}', context)
            ended = time.perf_counter()
            assert direct.content[0].text == "hi" and ghost.ok and ghost.content == "hi", (direct, ghost)
            if round_ >= 20:
                samples["direct SDK client"].append((middle - started) * 1000)
                samples["through Ghost"].append((ended - middle) * 1000)
    return samples


async def bench_starts(home: Path, mcp: McpTools, starts: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {"SDK stdio (unsandboxed)": [], "Ghost, unsandboxed": [],
                                       "Ghost, sandboxed": []}
    host = entry(home, "host", False)
    for _ in range(starts):
        started = time.perf_counter()
        async with Client(StdioServerParameters(command=sys.executable, args=list(host["args"]))) as client:  # type: ignore[arg-type]
            await client.list_tools()
            samples["SDK stdio (unsandboxed)"].append((time.perf_counter() - started) * 1000)
        for label, sandbox in (("Ghost, unsandboxed", False), ("Ghost, sandboxed", True)):
            config = {"mcpServers": {"s": entry(home, "s", sandbox)}}
            started = time.perf_counter()
            await mcp.apply(parse_config(json.dumps(config).encode()))
            took = (time.perf_counter() - started) * 1000
            assert mcp.servers["s"].state == "ready", mcp.servers["s"].error
            samples[label].append(took)
            await mcp.apply(parse_config(b'{"mcpServers": {}}'))
    return samples


async def main(calls: int, starts: int) -> int:
    home = Path(tempfile.mkdtemp(prefix="ghost-bench-mcp-"))
    try:
        async with AsyncExitStack() as stack:
            registry, mcp = await build(home, stack)
            call_samples = await bench_calls(home, registry, mcp, calls)
            await mcp.apply(parse_config(b'{"mcpServers": {}}'))
            start_samples = await bench_starts(home, mcp, starts)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return report(call_samples, start_samples, calls, starts)


def report(calls: dict[str, list[float]], starts: dict[str, list[float]], n_calls: int, n_starts: int) -> int:
    print(f"MCP tool call `echo`, {n_calls} rounds, interleaved")
    print(f"{'way':<22}{'p50 ms':>9}{'p95 ms':>9}")
    for name, values in calls.items():
        print(f"{name:<22}{pct(values, 50):>9.2f}{pct(values, 95):>9.2f}")
    added = [ghost - direct for ghost, direct in zip(calls["through Ghost"], calls["direct SDK client"])]
    added_p50 = statistics.median(calls["through Ghost"]) - statistics.median(calls["direct SDK client"])
    print(f"Ghost's added time per call: p50 {added_p50:.2f} ms (per-round difference p50 {pct(added, 50):.2f} ms)")
    print(f"\nserver start-up to tools listed, {n_starts} rounds, interleaved")
    print(f"{'way':<26}{'p50 ms':>9}{'max ms':>9}")
    for name, values in starts.items():
        print(f"{name:<26}{statistics.median(values):>9.1f}{max(values):>9.1f}")
    sandbox_cost = statistics.median(starts["Ghost, sandboxed"]) - statistics.median(starts["Ghost, unsandboxed"])
    print(f"the sandbox adds {sandbox_cost:.1f} ms to a server's start (p50)")
    targets = Targets("bench/mcp.py")
    targets.check(added_p50 <= TARGET_ADDED_MS, f"Ghost's added time per MCP call: {added_p50:.2f} ms p50",
                  f"<= {TARGET_ADDED_MS:g} ms")
    return targets.finish()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.calls, args.starts)))
