"""langchain-openai's quick start against a real Ghost (the session's, on the scripted fake upstream):
chat, streaming, a client tool round trip, structured output — with the settings docs/clients.md gives."""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer

MODEL = "fake-model"


class Pet(BaseModel):
    name: str
    age: int


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@pytest.fixture()
def llm(ghost: GhostServer) -> ChatOpenAI:
    return ChatOpenAI(model=MODEL, base_url=f"{ghost.url}/v1", api_key=ghost.api_key, max_retries=0, timeout=60)


def test_invoke_answers(llm: ChatOpenAI, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="Hello from Ghost."))
    reply = llm.invoke("Say hello")
    assert reply.content == "Hello from Ghost."
    assert reply.usage_metadata is not None and reply.usage_metadata["total_tokens"] == 15
    assert upstream.chat_requests()[-1]["body"]["messages"][-1] == {"role": "user", "content": "Say hello"}


def test_stream_arrives_in_pieces(llm: ChatOpenAI, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="one two three"))
    pieces = [chunk.content for chunk in llm.stream("Count") if chunk.content]
    assert "".join(pieces) == "one two three" and len(pieces) >= 3


def test_a_client_tool_round_trip(llm: ChatOpenAI, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="", tool_calls=[{"name": "get_weather", "arguments": {"city": "Lima"}}]),
                    Reply(content="It is sunny in Lima."))
    with_tools = llm.bind_tools([get_weather])
    asked = HumanMessage("Weather in Lima?")
    first = with_tools.invoke([asked])
    (call,) = first.tool_calls
    assert call["name"] == "get_weather" and call["args"] == {"city": "Lima"}
    result = ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])
    final = with_tools.invoke([asked, first, result])
    assert final.content == "It is sunny in Lima."
    sent = upstream.chat_requests()[-1]["body"]["messages"]
    assert {"role": "tool", "tool_call_id": call["id"], "content": "sunny in Lima"} in sent


def test_with_structured_output_parses(llm: ChatOpenAI, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="A dog, three years old."), Reply(content=json.dumps({"name": "Rex", "age": 3})))
    pet = llm.with_structured_output(Pet).invoke("A pet, please")
    assert pet == Pet(name="Rex", age=3)
    answer = upstream.chat_requests()[-1]["body"]
    assert answer["response_format"]["type"] == "json_schema"  # its default method
    assert answer["response_format"]["json_schema"]["schema"]["properties"].keys() == {"name", "age"}


def test_n_and_logprobs_on_the_plain_model(ghost: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="a cat"))
    plain = ChatOpenAI(model=f"{MODEL}-plain", base_url=f"{ghost.url}/v1", api_key=ghost.api_key, max_retries=0,
                       n=2, logprobs=True, top_logprobs=1)
    result = plain.generate([[HumanMessage("An animal")]])
    (generations,) = result.generations
    assert [g.text for g in generations] == ["a cat", "a cat (2)"]
    assert generations[0].generation_info["logprobs"]["content"][0]["token"] == "a"
