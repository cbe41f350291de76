"""The OpenAI Agents SDK with its default model (`OpenAIResponsesModel`, the Responses API)
against a real Ghost and the scripted fake upstream: a `function_tool` the SDK runs itself, and
an `output_type` that reaches the upstream as a JSON-schema `response_format`."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
from agents import Agent, RunConfig, Runner, function_tool, set_tracing_disabled
from agents.models.openai_provider import OpenAIProvider
from agents.models.openai_responses import OpenAIResponsesModel
from pydantic import BaseModel

from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer

set_tracing_disabled(True)  # the SDK would otherwise send traces to OpenAI's servers


class Forecast(BaseModel):
    city: str
    sky: str


@function_tool
def get_weather(city: str) -> str:
    """The sky over a city."""
    return f"sunny in {city}"


@pytest.fixture(scope="module")
def server(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    with GhostServer("--upstream-url", upstream.url, home=tmp_path_factory.mktemp("agents-home")) as ghost:
        yield ghost


@pytest.fixture()
def run_config(server: GhostServer) -> RunConfig:
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=server.api_key, max_retries=0)
    return RunConfig(model_provider=OpenAIProvider(openai_client=client), tracing_disabled=True)


def test_default_model_is_the_responses_api(run_config: RunConfig) -> None:
    assert isinstance(run_config.model_provider.get_model("fake-model"), OpenAIResponsesModel)


async def test_function_tool_and_output_type(run_config: RunConfig, upstream: FakeUpstream) -> None:
    # Tool rounds go without the format (ghost.agent.answer_format); once the model answers, one more
    # call without tools carries it: that reply is the structured answer.
    upstream.script(Reply(content="", tool_calls=[{"name": "get_weather", "arguments": {"city": "Lima"}}]),
                    Reply(content="Sunny in Lima, then."), Reply(content='{"city": "Lima", "sky": "sunny"}'))
    agent = Agent(name="forecaster", instructions="Use the tool.", model="fake-model", tools=[get_weather],
                  output_type=Forecast)
    result = await Runner.run(agent, "Weather in Lima?", run_config=run_config)
    assert result.final_output == Forecast(city="Lima", sky="sunny")
    first, second, answer = [r["body"] for r in upstream.chat_requests()][-3:]
    assert "response_format" not in first and "response_format" not in second
    assert answer["response_format"]["type"] == "json_schema" and "tools" not in answer
    assert set(answer["response_format"]["json_schema"]["schema"]["properties"]) == {"city", "sky"}
    assert answer["messages"] == second["messages"]
    assert any(t["function"]["name"] == "get_weather" for t in first["tools"])
    tool_result = second["messages"][-1]
    assert tool_result["role"] == "tool" and tool_result["content"] == "sunny in Lima"
    call = second["messages"][-2]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather" and json.loads(call["function"]["arguments"]) == {"city": "Lima"}


async def test_streamed_run(run_config: RunConfig, upstream: FakeUpstream) -> None:
    upstream.script(Reply(chunks=["Hello", " there"]))
    agent = Agent(name="greeter", model="fake-model")
    result = Runner.run_streamed(agent, "hi", run_config=run_config)
    deltas = [event.data.delta async for event in result.stream_events()
              if event.type == "raw_response_event" and event.data.type == "response.output_text.delta"]
    assert deltas == ["Hello", " there"] and result.final_output == "Hello there"
