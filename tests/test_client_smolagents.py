"""smolagents' quick start against a real Ghost (the session's, on the scripted fake upstream), with
`OpenAIServerModel` as docs/clients.md sets it: the model's chat, streamed, structured output, a
`ToolCallingAgent` whose tools are client tools to Ghost, and a `CodeAgent` running the code it is sent."""

from __future__ import annotations

import json

import pytest
from smolagents import CodeAgent, OpenAIServerModel, ToolCallingAgent, tool

from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer

MODEL = "fake-model"
USER = [{"role": "user", "content": [{"type": "text", "text": "Say hello"}]}]


@tool
def get_weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: the city's name.
    """
    return f"sunny in {city}"


@pytest.fixture()
def model(ghost: GhostServer) -> OpenAIServerModel:
    return OpenAIServerModel(model_id=MODEL, api_base=f"{ghost.url}/v1", api_key=ghost.api_key,
                             client_kwargs={"max_retries": 0})


def sent(upstream: FakeUpstream) -> list[dict]:
    return [request["body"] for request in upstream.chat_requests()]


def test_generate_answers(model: OpenAIServerModel, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="Hello."))
    message = model.generate(USER)
    assert message.content == "Hello." and message.token_usage.input_tokens == 10


def test_generate_stream_arrives_in_pieces(model: OpenAIServerModel, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="one two three"))
    pieces = [delta.content for delta in model.generate_stream(USER) if delta.content]
    assert "".join(pieces) == "one two three" and len(pieces) >= 3


def test_response_format_is_structured_output(model: OpenAIServerModel, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="a dog"), Reply(content=json.dumps({"name": "Rex"})))
    schema = {"type": "json_schema", "json_schema": {"name": "Pet", "strict": True, "schema": {
        "type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"],
        "additionalProperties": False}}}
    message = model.generate(USER, response_format=schema)
    assert json.loads(message.content) == {"name": "Rex"}
    assert sent(upstream)[-1]["response_format"] == schema


def test_a_tool_calling_agent_runs_its_tools_through_ghost(model: OpenAIServerModel, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="", tool_calls=[{"name": "get_weather", "arguments": {"city": "Lima"}}]),
                    Reply(content="", tool_calls=[{"name": "final_answer", "arguments": {"answer": "Sunny."}}]))
    agent = ToolCallingAgent(tools=[get_weather], model=model, max_steps=3, verbosity_level=0)
    assert agent.run("Weather in Lima?") == "Sunny."
    first, second = sent(upstream)
    assert {t["function"]["name"] for t in first["tools"]} >= {"get_weather", "final_answer"}
    assert "sunny in Lima" in json.dumps(second["messages"])  # smolagents ran it and sent the result back


def test_a_streaming_tool_calling_agent(model: OpenAIServerModel, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="", tool_calls=[{"name": "final_answer", "arguments": {"answer": "Done."}}]))
    agent = ToolCallingAgent(tools=[], model=model, max_steps=2, verbosity_level=0, stream_outputs=True)
    assert agent.run("Finish") == "Done."
    assert sent(upstream)[-1]["stream"] is True


def test_a_code_agent_runs_the_code_it_is_sent(model: OpenAIServerModel, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="Thought: multiply.\n<code>\nfinal_answer(6 * 7)\n</code>"))
    agent = CodeAgent(tools=[], model=model, max_steps=2, verbosity_level=0)
    assert agent.run("What is 6 times 7?") == 42
