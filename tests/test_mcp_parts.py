"""The MCP pieces that need no server: the config file's checks, tool names, result conversion."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import mcp_types
import pytest

from ghost.mcp.config import HttpServer, StdioServer, load_config, parse_config
from ghost.mcp.names import namespaced
from ghost.mcp.results import tool_result
from ghost.tools.registry import TOOL_NAME


def config(servers: dict[str, object]) -> bytes:
    return json.dumps({"mcpServers": servers}).encode()


def test_the_desktop_client_shape_is_read() -> None:
    parsed = parse_config(config({
        "time": {"command": "uvx", "args": ["mcp-server-time"], "env": {"TZ": "UTC"}},
        "web": {"url": "https://example.com/mcp", "headers": {"Authorization": "Bearer x"}},
    }))
    assert parsed.error == "" and parsed.skipped == {}
    time, web = parsed.servers["time"], parsed.servers["web"]
    assert isinstance(time, StdioServer) and time.args == ("mcp-server-time",) and time.env == {"TZ": "UTC"}
    assert time.sandbox is True and time.network is False and time.workdir == "own"  # the safe defaults
    assert isinstance(web, HttpServer) and web.headers == {"Authorization": "Bearer x"}


@pytest.mark.parametrize(("entry", "why"), [
    ({"command": ""}, "command"),
    ({"command": "x", "args": "not a list"}, "args"),
    ({"command": "x", "sandbox": "maybe"}, "sandbox"),
    ({"command": "x", "workdir": "/etc"}, "workdir"),
    ({"command": "x", "sandbox": False, "workdir": "sandbox"}, "unsandboxed server"),
    ({"command": "x", "env": {"BAD NAME": "1"}}, "environment variable name"),
    ({"command": "x\0y"}, "NUL"),
    ({"command": "x", "typo": 1}, "typo"),
    ({"url": "file:///etc/passwd"}, "http"),
    ({"url": "https://x", "headers": {"X": "a\r\nInjected: 1"}}, "single lines"),
    ({"url": "https://x", "command": "y"}, "command"),
    ("a string", "object"),
])
def test_a_bad_entry_is_skipped_with_a_reason_and_the_others_kept(entry: object, why: str) -> None:
    parsed = parse_config(config({"good": {"command": "x"}, "bad": entry}))
    assert list(parsed.servers) == ["good"]
    assert why in parsed.skipped["bad"]


@pytest.mark.parametrize("name", ["", "1abc", "a b", "a/../b", "x" * 25, "ü"])
def test_server_names_are_safe_as_tool_prefixes_and_directory_names(name: str) -> None:
    assert name not in parse_config(config({name: {"command": "x"}})).servers


def test_names_that_fold_to_the_same_prefix_are_refused() -> None:
    parsed = parse_config(config({"my-git": {"command": "x"}, "my_git": {"command": "y"}}))
    assert list(parsed.servers) == ["my-git"] and "clashes" in parsed.skipped["my_git"]


@pytest.mark.parametrize(("data", "why"), [
    (b"{nope", "not valid JSON"), (b"[]", "mcpServers"), (b'{"servers": {}}', "mcpServers"),
    (b"\xff\xfe", "not valid JSON"),
])
def test_a_bad_file_gives_no_servers_and_one_reason(data: bytes, why: str) -> None:
    parsed = parse_config(data)
    assert parsed.servers == {} and why in parsed.error


def test_a_missing_file_is_an_empty_configuration(tmp_path: Path) -> None:
    assert load_config(tmp_path / "absent.json") == parse_config(config({}))
    huge = tmp_path / "huge.json"
    huge.write_bytes(b" " * (1024 * 1024 + 1))
    assert "larger than" in load_config(huge).error


def test_tool_names_are_valid_unique_and_keep_valid_names() -> None:
    tools = ["get_time", "get.time", "get-time", "a" * 100, "a" * 101, "ünïcode", "", "_x"]
    names = namespaced("my-server", tools)
    assert names["get_time"] == "my_server__get_time"  # a valid name keeps itself
    assert len(set(names.values())) == len(tools)
    assert all(TOOL_NAME.match(name) and name.startswith("my_server__") for name in names.values())


def test_text_images_and_errors_become_tool_results() -> None:
    png = base64.b64encode(b"\x89PNG" + b"\0" * 96).decode()
    result = tool_result("srv__shot", mcp_types.CallToolResult(content=[
        mcp_types.TextContent(text="here it is"), mcp_types.ImageContent(data=png, mime_type="image/png"),
        mcp_types.EmbeddedResource(resource=mcp_types.TextResourceContents(uri="file:///a.txt", text="inside")),
    ]))
    assert result.ok
    assert result.content.splitlines() == ["here it is", "[image: image/png, 100 bytes, not shown]",
                                           "[resource file:///a.txt]", "inside"]
    assert png not in result.content
    failed = tool_result("srv__x", mcp_types.CallToolResult(content=[mcp_types.TextContent(text="no")], is_error=True))
    assert not failed.ok and failed.content == "srv__x reported an error: no"
    structured = tool_result("srv__y", mcp_types.CallToolResult(content=[], structured_content={"a": 1}))
    assert structured.content == '{"a": 1}'


# --- one server, in-process: the concurrency bound ------------------------------------------------

async def test_a_call_beyond_the_concurrency_limit_waits_for_a_free_slot(tmp_path: Path) -> None:
    """Unsandboxed (no executor needed): what is tested is Ghost's slot, not the sandbox."""
    import shutil
    import sys

    from ghost.mcp.connection import McpLimits
    from ghost.mcp.provider import McpTools

    servers = {}
    for name in ("toy", "twin"):  # the twin, a server of its own with a free slot, is the control
        script = tmp_path / "mcp" / name / "toy.py"
        script.parent.mkdir(parents=True)
        shutil.copy(Path(__file__).with_name("mcp_toy_server.py"), script)
        servers[name] = {"command": sys.executable, "args": [str(script)], "sandbox": False}
    script = tmp_path / "mcp" / "toy" / "toy.py"
    limits = McpLimits(start_timeout=120, call_timeout=600, max_concurrent_calls=1, restart_backoff=1,
                       restart_backoff_max=1, ping_interval=30, max_tools=10, schema_max_chars=10_000)
    tools = McpTools(limits, None, tmp_path / "mcp", tmp_path, 1024 * 1024, tmp_path / "mcp.json")  # type: ignore[arg-type]
    await tools.apply(parse_config(config(servers)))
    try:
        server, twin = tools.servers["toy"], tools.servers["twin"]
        assert server.state == "ready" and twin.state == "ready", (server.error, twin.error)
        hanging = asyncio.create_task(server.call("hang", "toy__hang", {"tag": "first"}))
        while not (script.parent / "started-first").exists():
            await asyncio.sleep(0.02)
        waiting = asyncio.create_task(server.call("echo", "toy__echo", {"text": "second"}))
        # The signal that the echo would be back were it let through: the same echo, asked of the
        # twin after it, came back (three times over).
        for _ in range(3):
            assert (await twin.call("echo", "twin__echo", {"text": "control"})).content == "control"
        assert not waiting.done()
        hanging.cancel()  # frees the slot (and cancels the call on the server)
        assert (await asyncio.wait_for(waiting, 60)).content == "second"  # the probe works
        while not (script.parent / "cancelled-first").exists():
            await asyncio.sleep(0.02)
    finally:
        await tools.aclose()


async def test_without_bubblewrap_a_sandboxed_server_does_not_start(tmp_path: Path) -> None:
    import sys

    from ghost.config import Settings
    from ghost.mcp.provider import McpTools
    from ghost.mcp.setup import limits_from
    from ghost.sandbox.factory import make_executor

    settings = Settings(home=tmp_path, sandbox_backend="process", mcp_restart_backoff=60)
    settings.sandbox_path.mkdir(parents=True)
    executor = await make_executor(settings, settings.sandbox_path)
    tools = McpTools(limits_from(settings), executor, tmp_path / "mcp", settings.sandbox_path, 1024 * 1024,
                     tmp_path / "mcp.json")
    try:
        await tools.apply(parse_config(config({"toy": {"command": sys.executable, "args": ["-V"]}})))
        server = tools.servers["toy"]
        assert server.state == "down" and server.tools == []
        assert "bubblewrap is not available" in server.error and '"sandbox": false' in server.error
    finally:
        await tools.aclose()
        await executor.aclose()
