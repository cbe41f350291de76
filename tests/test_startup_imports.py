"""What a Ghost process imports: the MCP SDK (about a CPU-second of start-up, paid ~120 times by the
suite) only when MCP servers are configured or a client uses Ghost's /mcp endpoint.

The probe is the real `ghost serve` in a `python -c` wrapper that, as the process stops, prints
which of the watched libraries are in its `sys.modules`: after a real start, real requests and a
SIGTERM, nothing in Ghost's own code is asked.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ghost.testing.fake_upstream import FakeUpstream
from ghost.testing.server import GhostServer, free_port
from mcp_toys import write_config

WATCHED = ["mcp", "mcp_types", "llama_cpp"]
MARK = "IMPORTED-AT-EXIT "
# uvicorn stops on SIGTERM and then raises it again with the handler it found at its start: this one.
PROBE = f"""
import json, signal, sys
def report(*_):
    print({MARK!r} + json.dumps({{m: m in sys.modules for m in {WATCHED!r}}}), flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, report)
from ghost.cli import main
main(sys.argv[1:])
"""


class ProbedGhost(GhostServer):
    """A real Ghost, started through the probe wrapper instead of `python -m ghost`."""

    def command(self) -> list[str]:
        return [sys.executable, "-c", PROBE, *super().command()[3:]]

    def imported_at_exit(self) -> dict[str, bool]:
        assert self.stop() == 0, self.log()
        lines = [line for line in self.log_path.read_text().splitlines() if line.startswith(MARK)]
        assert len(lines) == 1, self.log()
        return json.loads(lines[0][len(MARK):])


def chat(ghost: GhostServer) -> None:
    reply = httpx.post(ghost.url + "/v1/chat/completions", headers=ghost.headers, timeout=120,
                       json={"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 200, reply.text


@pytest.fixture()
def probed(upstream: FakeUpstream, tmp_path: Path) -> Iterator[ProbedGhost]:
    home = tmp_path / "home"
    home.mkdir()
    server = ProbedGhost("--upstream-url", upstream.url, home=home)
    yield server
    server.stop()


def test_a_ghost_without_mcp_servers_never_imports_the_mcp_sdk(probed: ProbedGhost) -> None:
    probed.start()
    chat(probed)
    assert httpx.get(probed.url + "/api/health", headers=probed.headers, timeout=30).status_code == 200
    imported = probed.imported_at_exit()
    assert imported == {"mcp": False, "mcp_types": False, "llama_cpp": False}


def test_the_probe_sees_the_sdk_once_a_server_is_configured(probed: ProbedGhost) -> None:
    # An HTTP entry at a closed port: configured (so its connection is built) and down at once.
    write_config(probed.home, {"gone": {"url": f"http://127.0.0.1:{free_port()}/mcp"}})
    probed.start()
    chat(probed)
    assert probed.imported_at_exit()["mcp"] is True


def test_the_mcp_endpoint_imports_the_sdk_at_its_first_request(probed: ProbedGhost) -> None:
    probed.start()
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    headers = {"Accept": "application/json, text/event-stream", **probed.headers}

    async def two_at_once() -> list[httpx.Response]:  # two first requests start one endpoint
        async with httpx.AsyncClient(timeout=60) as http:
            return await asyncio.gather(*(http.post(probed.url + "/mcp", json=initialize, headers=headers)
                                          for _ in range(2)))

    replies = asyncio.run(two_at_once())
    assert [r.status_code for r in replies] == [200, 200]
    assert replies[0].json()["result"]["serverInfo"]["name"] == "ghost"
    assert probed.imported_at_exit()["mcp"] is True
