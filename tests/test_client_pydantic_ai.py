"""pydantic-ai's quick start against a real Ghost (the session's, on the scripted fake upstream): an
agent run, streamed text, a tool of the agent's own (a client tool to Ghost) round trip, and both
kinds of structured output — with the settings docs/clients.md gives."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import BaseModel
from pydantic_ai import Agent, NativeOutput
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer

MODEL = "fake-model"


class Pet(BaseModel):
    name: str
    age: int


@pytest.fixture()
def model(ghost: GhostServer) -> OpenAIChatModel:
    return OpenAIChatModel(MODEL, provider=OpenAIProvider(base_url=f"{ghost.url}/v1", api_key=ghost.api_key))


def sent(upstream: FakeUpstream) -> list[dict]:
    return [request["body"] for request in upstream.chat_requests()]


def test_run_sync_answers(model: OpenAIChatModel, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="Paris."))
    result = Agent(model, instructions="Be concise.").run_sync("The capital of France?")
    assert result.output == "Paris."
    assert result.usage.input_tokens == 10 and result.usage.output_tokens == 5
    messages = sent(upstream)[-1]["messages"]
    assert {"role": "system", "content": "Be concise."} in messages  # after Ghost's own system prompt
    assert messages[-1] == {"role": "user", "content": "The capital of France?"}


def test_run_stream_gives_the_text_as_it_comes(model: OpenAIChatModel, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="one two three", delay=0.2))  # the pieces come apart in time

    async def streamed() -> list[str]:
        async with Agent(model).run_stream("Count") as result:
            return [delta async for delta in result.stream_text(delta=True, debounce_by=None)]

    pieces = asyncio.run(streamed())
    assert "".join(pieces) == "one two three" and len(pieces) >= 2


def test_a_tool_of_the_agent_round_trip(model: OpenAIChatModel, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="", tool_calls=[{"name": "get_weather", "arguments": {"city": "Lima"}}]),
                    Reply(content="Sunny in Lima."))
    agent = Agent(model)
    ran: list[str] = []

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """The weather in a city."""
        ran.append(city)
        return f"sunny in {city}"

    assert agent.run_sync("Weather in Lima?").output == "Sunny in Lima."
    assert ran == ["Lima"]  # pydantic-ai ran its own tool: Ghost handed the call back
    first, second = sent(upstream)
    assert any(t["function"]["name"] == "get_weather" for t in first["tools"])
    assert any(m["role"] == "tool" and m["content"] == "sunny in Lima" for m in second["messages"])


def test_the_default_structured_output_is_a_tool_call(model: OpenAIChatModel, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="", tool_calls=[{"name": "final_result", "arguments": {"name": "Rex", "age": 3}}]))
    result = Agent(model, output_type=Pet).run_sync("A pet, please")
    assert result.output == Pet(name="Rex", age=3)


def test_native_output_is_response_format(model: OpenAIChatModel, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="thinking about a dog"), Reply(content=json.dumps({"name": "Rex", "age": 3})))
    result = Agent(model, output_type=NativeOutput(Pet)).run_sync("A pet, please")
    assert result.output == Pet(name="Rex", age=3)
    answer = sent(upstream)[-1]
    assert answer["response_format"]["type"] == "json_schema" and "tools" not in answer
