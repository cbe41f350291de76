"""MCP through a real Ghost: real servers (mcp-server-time, mcp-server-git, a toy server written
with the SDK) over stdio in the bubblewrap sandbox and over Streamable HTTP, driven by chat
turns on the scripted fake upstream; and Ghost's own /mcp endpoint driven by the SDK's client."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer, clean_env
from mcp_toys import PYTHON, HttpToy, install_toy, toy, wait_for, write_config

# Each Ghost here starts several Python MCP servers in sandboxes; on a loaded 2-core machine
# that alone takes tens of seconds. A hang guard, not a time budget.
pytestmark = pytest.mark.timeout(600)

CANARY = "canary-" + uuid.uuid4().hex


# --- helpers -------------------------------------------------------------------------------------

def chat(ghost: GhostServer, stream: bool = False) -> httpx.Response:
    return httpx.post(ghost.url + "/v1/chat/completions", headers=ghost.headers, timeout=120, json={
        "model": "fake-model", "stream": stream, "messages": [{"role": "user", "content": "go"}]})


def call_through_chat(ghost: GhostServer, upstream: FakeUpstream, name: str, arguments: dict[str, Any]) -> str:
    """Script one tool call, run the turn, return the tool message the model got next."""
    upstream.script(Reply(content="", tool_calls=[{"name": name, "arguments": arguments}]), Reply(content="done"))
    reply = chat(ghost)
    assert reply.status_code == 200, reply.text
    last = upstream.chat_requests()[-1]["body"]["messages"][-1]
    assert last["role"] == "tool"
    return last["content"]


def offered_tools(upstream: FakeUpstream, index: int = -1) -> dict[str, dict[str, Any]]:
    body = upstream.chat_requests()[index]["body"]
    return {tool["function"]["name"]: tool["function"] for tool in body.get("tools", [])}


def health_mcp(ghost: GhostServer) -> dict[str, Any]:
    return httpx.get(ghost.url + "/api/health", headers=ghost.headers, timeout=30).json()["mcp"]


def server_info(ghost: GhostServer, name: str) -> dict[str, Any]:
    return next(s for s in health_mcp(ghost)["servers"] if s["name"] == name)


def wait_ready(ghost: GhostServer, *names: str) -> None:
    def ready(name: str) -> bool:  # a server the reload has not picked up yet is not listed at all
        listed = {s["name"]: s for s in health_mcp(ghost)["servers"]}
        return name in listed and listed[name]["state"] == "ready"

    wait_for(lambda: all(ready(n) for n in names), f"{names} ready")


class TcpListener:
    """A loopback port that accepts connections: what the network probe tries to reach."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.close()

    def close(self) -> None:
        self.sock.close()


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def listener() -> Iterator[TcpListener]:
    server = TcpListener()
    yield server
    server.close()


@pytest.fixture(scope="module")
def ghost(upstream: FakeUpstream, http_toy: HttpToy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    home = tmp_path_factory.mktemp("mcp-home")
    (home / "canary.txt").write_text(CANARY)
    for name in ("toy", "toynet"):
        install_toy(home, name)
    host_toy = install_toy(home, "toyhost")
    repo = home / "sandbox" / "repo"
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "README").write_text("hello\n")
    write_config(home, {
        "time": {"command": "mcp-server-time", "args": ["--local-timezone", "UTC"]},
        "git": {"command": "mcp-server-git", "args": ["--repository", "/sandbox/repo"], "workdir": "sandbox"},
        "toy": toy(),
        "toynet": toy(network=True),
        "toyhost": {"command": PYTHON, "args": [str(host_toy)], "sandbox": False},
        "web": {"url": http_toy.url},
        "bad name!": {"command": "x"},
        "broken": {"command": "x", "sandbox": "sometimes"},
    })
    # A long call timeout: in these tests a call ends only because its server answered or the
    # client went away. A wide window: a whole capped tool result reaches the model unshortened.
    server = GhostServer("--upstream-url", upstream.url, "--context-window", "131072", "--mcp-call-timeout", "600",
                         "--mcp-start-timeout", "90", "--mcp-ping-interval", "1", "--sandbox-backend", "bwrap", home=home)
    with server:
        wait_ready(server, "time", "git", "toy", "toynet", "toyhost", "web")
        yield server


# --- the tools reach the model ----------------------------------------------------------------------

def test_tools_are_offered_with_namespaced_names_and_their_schemas(ghost: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="hi"))
    assert chat(ghost).status_code == 200
    tools = offered_tools(upstream)
    assert {"execute", "read_file", "time__get_current_time", "time__convert_time", "git__git_status",
            "toy__echo", "web__echo", "toyhost__read_file"} <= set(tools)
    timezone = tools["time__get_current_time"]["parameters"]
    assert timezone["type"] == "object" and timezone["required"] == ["timezone"]
    assert "IANA" in timezone["properties"]["timezone"]["description"]
    assert "Get current time" in tools["time__get_current_time"]["description"]
    assert tools["web__echo"]["parameters"]["properties"]["text"]["type"] == "string"


def test_bad_entries_are_skipped_and_shown_in_health(ghost: GhostServer) -> None:
    mcp = health_mcp(ghost)
    assert "server names" in mcp["skipped"]["bad name!"]
    assert "sandbox" in mcp["skipped"]["broken"]
    time_server = server_info(ghost, "time")
    assert time_server["sandboxed"] is True and time_server["network"] is False
    assert time_server["tools"] == 2 and time_server["state"] == "ready"
    assert server_info(ghost, "toyhost")["sandboxed"] is False


def test_a_call_reaches_the_time_server_and_its_result_reaches_the_model(ghost: GhostServer,
                                                                         upstream: FakeUpstream) -> None:
    result = call_through_chat(ghost, upstream, "time__get_current_time", {"timezone": "Asia/Tokyo"})
    data = json.loads(result)
    assert data["timezone"] == "Asia/Tokyo" and data["datetime"].endswith("+09:00")


def test_the_git_server_works_on_a_repository_in_the_agents_sandbox(ghost: GhostServer,
                                                                   upstream: FakeUpstream) -> None:
    result = call_through_chat(ghost, upstream, "git__git_status", {"repo_path": "/sandbox/repo"})
    assert "README" in result and "Untracked" in result


def test_a_call_over_streamable_http(ghost: GhostServer, upstream: FakeUpstream) -> None:
    assert call_through_chat(ghost, upstream, "web__echo", {"text": "über HTTP"}) == "über HTTP"


def test_a_tool_error_comes_back_as_a_failed_tool_result(ghost: GhostServer, upstream: FakeUpstream) -> None:
    result = call_through_chat(ghost, upstream, "toy__fail", {"message": "the disk is made of cheese"})
    assert "reported an error" in result and "the disk is made of cheese" in result


def test_a_huge_result_is_cut_to_the_tool_result_limit(ghost: GhostServer, upstream: FakeUpstream) -> None:
    result = call_through_chat(ghost, upstream, "toy__huge", {"chars": 2_000_000})
    assert len(result) <= 24_000 and "result cut" in result and result.startswith("xxxx")


# --- the sandbox ---------------------------------------------------------------------------------

def test_a_sandboxed_server_cannot_read_ghosts_home(ghost: GhostServer, upstream: FakeUpstream) -> None:
    canary = str(ghost.home / "canary.txt")
    # Positive control: the same probe, unsandboxed, reads it.
    assert call_through_chat(ghost, upstream, "toyhost__read_file", {"path": canary}) == "READ:" + CANARY
    sandboxed = call_through_chat(ghost, upstream, "toy__read_file", {"path": canary})
    assert sandboxed.startswith("ERROR: FileNotFoundError") and CANARY not in sandboxed
    database = call_through_chat(ghost, upstream, "toy__read_file", {"path": str(ghost.home / "ghost.db")})
    assert database.startswith("ERROR")


def test_a_sandboxed_server_has_no_network_unless_its_entry_says_so(ghost: GhostServer, upstream: FakeUpstream,
                                                                    listener: TcpListener) -> None:
    probe = {"host": "127.0.0.1", "port": listener.port}
    assert call_through_chat(ghost, upstream, "toyhost__connect", probe) == "CONNECTED"  # control
    assert call_through_chat(ghost, upstream, "toynet__connect", probe) == "CONNECTED"  # "network": true
    cut_off = call_through_chat(ghost, upstream, "toy__connect", probe)
    assert cut_off.startswith("ERROR") and "CONNECTED" not in cut_off


def test_a_sandboxed_server_writes_only_its_own_directory(ghost: GhostServer, upstream: FakeUpstream) -> None:
    result = call_through_chat(ghost, upstream, "toy__read_file", {"path": "/sandbox/toy.py"})
    assert result.startswith("READ:") and "MCPServer" in result  # its own directory is /sandbox
    other = call_through_chat(ghost, upstream, "toy__read_file", {"path": str(ghost.home / "mcp/toyhost/toy.py")})
    assert other.startswith("ERROR")


# --- cancellation --------------------------------------------------------------------------------

def test_a_client_that_disconnects_cancels_the_call_on_the_server(ghost: GhostServer, upstream: FakeUpstream) -> None:
    tag = uuid.uuid4().hex[:8]
    started = ghost.home / "mcp" / "toy" / f"started-{tag}"
    marker = ghost.home / "mcp" / "toy" / f"cancelled-{tag}"
    upstream.script(Reply(content="", tool_calls=[{"name": "toy__hang", "arguments": {"tag": tag}}]),
                    Reply(content="never sent"))
    with httpx.Client(base_url=ghost.url, headers=ghost.headers, timeout=60) as client:
        with client.stream("POST", "/v1/chat/completions", json={
                "model": "fake-model", "stream": True, "messages": [{"role": "user", "content": "go"}]}) as reply:
            # The iterator is kept: dropped after the `break`, it would close the connection (httpx
            # closes a stream whose iterator is closed), a disconnect before the checks below.
            lines = reply.iter_lines()
            for line in lines:
                if "toy__hang" in line:  # the turn announced the call (tool activity)
                    break
            # The activity is announced before the call is sent: leaving now, on a busy machine, could
            # cancel the turn before the server ever saw the call. Wait until the server has it.
            wait_for(started.exists, "the server to start the call", timeout=60)
            assert not marker.exists(), ghost.log()[-4000:]  # running, not cancelled, while the client is there
    wait_for(marker.exists, "the server to see the call cancelled", timeout=60)


# --- Ghost's own /mcp endpoint ----------------------------------------------------------------------

async def _endpoint_session(ghost: GhostServer, headers: dict[str, str],
                            statuses: list[int] | None = None) -> tuple[list[str], str]:
    """Tools listed and an `execute` through Ghost's /mcp; `statuses` collects every HTTP status."""
    async def record(response: httpx2.Response) -> None:
        if statuses is not None:
            statuses.append(response.status_code)

    # timeout 60: the first /mcp request imports the MCP SDK (a second or more on a busy machine)
    async with httpx2.AsyncClient(headers=headers, timeout=60, event_hooks={"response": [record]}) as http:
        async with Client(streamable_http_client(ghost.url + "/mcp", http_client=http)) as client:
            names = [tool.name for tool in (await client.list_tools()).tools]
            result = await client.call_tool("execute", {"code": "print(6 * 7)"})
            return names, result.content[0].text


def test_ghosts_own_tools_over_mcp(ghost: GhostServer) -> None:
    names, output = asyncio.run(_endpoint_session(ghost, ghost.headers))
    assert {"execute", "read_file", "write_file", "scratchpad_set", "create_skill"} <= set(names)
    assert not any("__" in name for name in names)  # tools Ghost takes from MCP servers are not relayed
    assert "42" in output


def test_the_mcp_endpoint_wants_the_key(ghost: GhostServer) -> None:
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    headers = {"Accept": "application/json, text/event-stream"}
    anonymous = httpx.post(ghost.url + "/mcp", json=initialize, headers=headers, timeout=30)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["type"] == "authentication_error"
    wrong = httpx.post(ghost.url + "/mcp", json=initialize, headers={**headers, "Authorization": "Bearer nope"},
                       timeout=30)
    assert wrong.status_code == 401
    keyed = httpx.post(ghost.url + "/mcp", json=initialize, headers={**headers, **ghost.headers}, timeout=30)
    assert keyed.status_code == 200 and keyed.json()["result"]["serverInfo"]["name"] == "ghost"
    # The SDK's own client without the key: refused with the 401, not failed for another reason.
    statuses: list[int] = []
    with pytest.raises(ExceptionGroup):  # the SDK groups what its tasks raised
        asyncio.run(_endpoint_session(ghost, {}, statuses))
    assert statuses and set(statuses) == {401}, statuses


# --- failures: crash, hang, start-up, reload ----------------------------------------------------------

@pytest.fixture(scope="module")
def fragile(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    """A Ghost with a short call timeout and a server that never finishes starting (the SIGHUP
    test, last, changes its configuration)."""
    home = tmp_path_factory.mktemp("fragile-home")
    install_toy(home, "toy")
    write_config(home, {"toy": toy(), "sleeper": {"command": "sleep", "args": ["3600"]}})
    server = GhostServer("--upstream-url", upstream.url, "--mcp-call-timeout", "2", "--mcp-start-timeout", "30",
                         "--mcp-restart-backoff", "0.5", "--mcp-reload-interval", "3600",
                         "--sandbox-backend", "bwrap", home=home)
    with server:
        wait_ready(server, "toy")
        yield server


def test_a_server_that_never_starts_does_not_hold_ghost_back(fragile: GhostServer) -> None:
    sleeper = server_info(fragile, "sleeper")
    assert sleeper["state"] in ("starting", "down") and sleeper["tools"] == 0
    wait_for(lambda: "did not start" in server_info(fragile, "sleeper")["error"], "the start-up timeout")


def test_a_hanging_call_times_out_with_a_clear_error_and_is_cancelled(fragile: GhostServer,
                                                                     upstream: FakeUpstream) -> None:
    tag = uuid.uuid4().hex[:8]
    result = call_through_chat(fragile, upstream, "toy__hang", {"tag": tag})
    assert "did not answer within 2 s" in result and "--mcp-call-timeout" in result
    wait_for((fragile.home / "mcp" / "toy" / f"cancelled-{tag}").exists, "the cancellation to reach the server")


def test_a_crashed_servers_tools_vanish_and_come_back_after_the_restart(fragile: GhostServer,
                                                                        upstream: FakeUpstream) -> None:
    restarts = server_info(fragile, "toy")["restarts"]
    result = call_through_chat(fragile, upstream, "toy__crash", {})
    assert "went away" in result
    after_crash = offered_tools(upstream)  # the turn's next round, right after the crash
    assert "execute" in after_crash and not any(name.startswith("toy__") for name in after_crash)
    wait_for(lambda: server_info(fragile, "toy")["restarts"] > restarts
             and server_info(fragile, "toy")["state"] == "ready", "the restart")
    assert call_through_chat(fragile, upstream, "toy__echo", {"text": "back"}) == "back"
    assert "toy__echo" in offered_tools(upstream)


def test_sighup_reloads_the_config(fragile: GhostServer) -> None:
    install_toy(fragile.home, "second")
    write_config(fragile.home, {"toy": toy(), "second": toy()})
    assert "second" not in {s["name"] for s in health_mcp(fragile)["servers"]}  # the poll is hourly here
    assert fragile.process is not None
    fragile.process.send_signal(signal.SIGHUP)
    wait_ready(fragile, "second")
    names = {s["name"] for s in health_mcp(fragile)["servers"]}
    assert names == {"toy", "second"}  # the sleeper was removed


def test_a_changed_config_file_is_picked_up(upstream: FakeUpstream, tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_config(home, {})
    with GhostServer("--upstream-url", upstream.url, "--mcp-reload-interval", "0.2", home=home) as server:
        assert health_mcp(server)["servers"] == []
        install_toy(home, "toy")
        write_config(home, {"toy": toy()})
        wait_ready(server, "toy")
        (home / "mcp.json").write_text("{not json")  # an edit half-way: the running servers stay
        wait_for(lambda: "not valid JSON" in health_mcp(server)["config_error"], "the bad file to be reported")
        assert server_info(server, "toy")["state"] == "ready"
        write_config(home, {})
        wait_for(lambda: health_mcp(server)["servers"] == [], "the server to be removed")
        assert health_mcp(server)["config_error"] == ""


def test_ghost_mcp_list_shows_servers_states_and_tools(ghost: GhostServer) -> None:
    env = clean_env({"GHOST_URL": ghost.url, "GHOST_API_KEY": ghost.api_key or ""})
    result = subprocess.run([PYTHON, "-m", "ghost", "mcp", "list"], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "time: ready (stdio, sandboxed, no network), 2 tools" in lines
    assert "toyhost: ready (stdio, NOT sandboxed, network), 8 tools" in lines
    assert any(line.startswith("web: ready (http http://127.0.0.1:") for line in lines)
    assert "    time__get_current_time" in lines
    assert any(line.startswith("bad name!: skipped: server names") for line in lines)


def test_an_http_server_that_goes_away_is_marked_down_and_reconnected(ghost: GhostServer, http_toy: HttpToy,
                                                                     upstream: FakeUpstream) -> None:
    # Liveness is checked every second here: a server that keeps answering is never restarted.
    assert server_info(ghost, "web")["restarts"] == 0 and server_info(ghost, "web")["state"] == "ready"
    http_toy.stop()
    wait_for(lambda: server_info(ghost, "web")["state"] != "ready", "the HTTP server to be marked down")
    assert server_info(ghost, "web")["tools"] == 0
    http_toy.start()
    wait_ready(ghost, "web")
    assert call_through_chat(ghost, upstream, "web__echo", {"text": "again"}) == "again"
