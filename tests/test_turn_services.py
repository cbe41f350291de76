"""The agent turn on its typed services, in-process: the scripted upstream stands in for the model,
the tools, the sandbox and SQLite are the real ones (the HTTP-level tests are in test_agent_turn)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from ghost.agent.request import ChatRequest
from ghost.agent.turn import AgentTurn, TurnOptions, TurnServices
from ghost.config import Settings
from ghost.errors import UpstreamError
from ghost.events import Done, Event, TextDelta, ToolActivity, ToolCall
from ghost.testing.scripted_upstream import ScriptedReply, ScriptedUpstream
from ghost.tools.setup import Toolbox, start_tools
from ghost.workspace.service import Workspace, open_workspace


@dataclass
class Started:
    settings: Settings
    workspace: Workspace
    toolbox: Toolbox

    def services(self, upstream: ScriptedUpstream) -> TurnServices:
        return TurnServices(self.settings, upstream, self.toolbox.registry, None, self.toolbox.sandbox_network)


@pytest.fixture()
async def started(tmp_path: Path) -> AsyncIterator[Started]:
    settings = Settings(home=tmp_path / "home", sandbox_backend="bwrap", sandbox_timeout=10)
    async with AsyncExitStack() as stack:
        workspace = await open_workspace(settings)
        stack.push_async_callback(workspace.db.close)
        toolbox = await start_tools(settings, workspace.sandbox_root, workspace.scratchpad, stack)
        yield Started(settings, workspace, toolbox)


def request(text: str = "remember k") -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], model="scripted", stream=True)


async def run(turn: AgentTurn) -> list[Event]:
    return [event async for event in turn.run()]


async def test_a_tool_round_then_an_answer(started: Started) -> None:
    call = ToolCall("c1", "scratchpad_set", json.dumps({"key": "k", "value": 41}))
    upstream = ScriptedUpstream([ScriptedReply(tool_calls=[call]), ScriptedReply(text="Stored it as k.")])
    events = await run(AgentTurn(started.services(upstream), request(), "r1", TurnOptions(max_tool_rounds=3)))

    activity = [e for e in events if isinstance(e, ToolActivity)]
    assert [(a.name, a.phase, a.ok) for a in activity] == [("scratchpad_set", "start", True),
                                                          ("scratchpad_set", "end", True)]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Stored it as k."
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "stop"
    assert await started.workspace.scratchpad.get("k") == 41  # the real tool ran on the real store
    first, second = upstream.sent
    assert first["messages"][0]["role"] == "system" and first["messages"][-1]["content"] == "remember k"
    assert "scratchpad_set" in {t["function"]["name"] for t in first["tools"]}
    tool_message = second["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == "c1"


async def test_the_round_limit_ends_the_turn_with_a_note(started: Started) -> None:
    call = ToolCall("c", "scratchpad_list", "{}")
    upstream = ScriptedUpstream([ScriptedReply(tool_calls=[call]) for _ in range(3)])
    events = await run(AgentTurn(started.services(upstream), request(), "r2", TurnOptions(max_tool_rounds=2)))
    assert len(upstream.sent) == 3  # the first call and two more rounds, then no more
    assert isinstance(events[-1], Done) and events[-1].stop_reason == "max_tool_rounds"
    assert "--max-tool-rounds" in "".join(e.text for e in events if isinstance(e, TextDelta))


async def test_an_upstream_failure_reaches_the_caller(started: Started) -> None:
    upstream = ScriptedUpstream([ScriptedReply(error=UpstreamError("model server fell over"))])
    with pytest.raises(UpstreamError, match="fell over"):
        await run(AgentTurn(started.services(upstream), request(), "r3", TurnOptions(max_tool_rounds=1)))


async def test_the_plain_variant_sends_no_tools_and_no_prompt(started: Started) -> None:
    upstream = ScriptedUpstream([ScriptedReply(text="A title")])
    options = TurnOptions(max_tool_rounds=0, use_tools=False, system_prompt=False, session_summary=False)
    await run(AgentTurn(started.services(upstream), request("title this"), "r4", options))
    (sent,) = upstream.sent
    assert "tools" not in sent and [m["role"] for m in sent["messages"]] == ["user"]
