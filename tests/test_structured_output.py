"""Structured output and the parameter rule, end to end: a real Ghost on the scripted fake upstream,
driven by the official clients (ollama, openai, langchain-ollama); every check looks at what the
upstream really received."""

from __future__ import annotations

import json

import httpx
import ollama
import openai
import pytest
from langchain_ollama import ChatOllama
from pydantic import BaseModel

from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer

MODEL, PLAIN = "fake-model", "fake-model-plain"
ANSWER = '{"name": "Rex", "age": 3}'


class Pet(BaseModel):
    name: str
    age: int


def ollama_client(ghost: GhostServer) -> ollama.Client:
    return ollama.Client(host=ghost.url, headers={"X-Ghost-Key": ghost.api_key})


def openai_client(ghost: GhostServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{ghost.url}/v1", api_key=ghost.api_key, max_retries=0)


def sent(upstream: FakeUpstream) -> list[dict]:
    return [request["body"] for request in upstream.chat_requests()]


# --- Ollama `format` on an agent model: tool rounds free, the answering call constrained --------------


def test_ollama_format_json_constrains_the_answering_call(ghost: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="Let me think: a dog."), Reply(content=ANSWER))
    reply = ollama_client(ghost).chat(model=MODEL, messages=[{"role": "user", "content": "A pet as JSON"}],
                                      format="json")
    assert json.loads(reply.message.content) == {"name": "Rex", "age": 3}
    assert reply.message.thinking == "Let me think: a dog."  # the unconstrained draft is reasoning, not the answer
    draft, answer = sent(upstream)
    assert draft["tools"] and "response_format" not in draft  # a format would leave no room for a tool call
    assert answer["response_format"] == {"type": "json_object"} and "tools" not in answer
    assert answer["messages"] == draft["messages"]  # the draft is not sent back: the answer is made anew


def test_ollama_format_schema_becomes_a_json_schema(ghost: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="draft"), Reply(content=ANSWER))
    reply = ollama_client(ghost).chat(model=MODEL, messages=[{"role": "user", "content": "A pet"}],
                                      format=Pet.model_json_schema(), stream=True)
    assert json.loads("".join(part.message.content for part in reply)) == {"name": "Rex", "age": 3}
    answer = sent(upstream)[-1]
    assert answer["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "Pet", "schema": Pet.model_json_schema(), "strict": False}}


def test_a_tool_round_runs_before_the_constrained_answer(ghost: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="", tool_calls=[{"name": "scratchpad_set", "arguments": {"key": "k", "value": "v"}}]),
                    Reply(content="Saved; now the answer."), Reply(content=ANSWER))
    reply = ollama_client(ghost).chat(model=MODEL, messages=[{"role": "user", "content": "Save, then JSON"}],
                                      format="json")
    assert json.loads(reply.message.content)["name"] == "Rex"
    first, second, answer = sent(upstream)
    assert "response_format" not in first and "response_format" not in second
    assert any(m["role"] == "tool" for m in answer["messages"]) and answer["response_format"]["type"] == "json_object"


def test_format_on_generate_and_on_a_plain_model_is_sent_on_the_one_call(ghost: GhostServer,
                                                                          upstream: FakeUpstream) -> None:
    upstream.script(Reply(content=ANSWER), Reply(content=ANSWER))
    client = ollama_client(ghost)
    assert json.loads(client.generate(model=MODEL, prompt="A pet", format="json").response)["age"] == 3
    assert json.loads(client.chat(model=PLAIN, messages=[{"role": "user", "content": "A pet"}],
                                  format=Pet.model_json_schema()).message.content)["age"] == 3
    generate, plain = sent(upstream)
    assert generate["response_format"] == {"type": "json_object"}
    assert plain["response_format"]["type"] == "json_schema" and plain["response_format"]["json_schema"]["name"] == "Pet"


def test_ollama_sampling_options_reach_the_upstream(ghost: GhostServer, upstream: FakeUpstream) -> None:
    ollama_client(ghost).chat(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                              options={"top_k": 20, "repeat_penalty": 1.15, "min_p": 0.05, "temperature": 0.3,
                                       "num_predict": 50})
    body = sent(upstream)[-1]
    assert {k: body[k] for k in ("top_k", "repeat_penalty", "repetition_penalty", "min_p", "temperature",
                                 "max_tokens")} == {"top_k": 20, "repeat_penalty": 1.15, "repetition_penalty": 1.15,
                                                    "min_p": 0.05, "temperature": 0.3, "max_tokens": 50}


def test_langchain_ollama_with_structured_output_parses(ghost: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="draft"), Reply(content=ANSWER))
    llm = ChatOllama(model=MODEL, base_url=ghost.url, client_kwargs={"headers": {"X-Ghost-Key": ghost.api_key}})
    pet = llm.with_structured_output(Pet).invoke("A pet, please")
    assert pet == Pet(name="Rex", age=3)
    assert sent(upstream)[-1]["response_format"]["json_schema"]["schema"]["properties"].keys() == {"name", "age"}


def test_openai_response_format_on_an_agent_model(ghost: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="draft"), Reply(content=ANSWER))
    parsed = openai_client(ghost).chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": "A pet"}], response_format=Pet)
    assert parsed.choices[0].message.parsed == Pet(name="Rex", age=3)
    assert sent(upstream)[-1]["response_format"]["json_schema"]["strict"] is True


# --- the parameter rule ----------------------------------------------------------------------------


@pytest.mark.parametrize("field,value", [("n", 2), ("logprobs", True), ("top_logprobs", 2),
                                         ("functions", [{"name": "f", "parameters": {}}]),
                                         ("modalities", ["text", "audio"])])
def test_a_parameter_an_agent_cannot_apply_is_a_400_naming_it(ghost: GhostServer, upstream: FakeUpstream,
                                                              field: str, value: object) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(ghost).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                                     extra_body={field: value})
    assert caught.value.body["message"].startswith(f"{field}: not supported on an agent model")
    assert sent(upstream) == []  # refused before any upstream call


def test_an_ollama_load_option_is_a_400_naming_it(ghost: GhostServer, upstream: FakeUpstream) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        ollama_client(ghost).chat(model=MODEL, messages=[{"role": "user", "content": "hi"}], options={"num_gpu": 8})
    assert caught.value.status_code == 400 and "options.num_gpu" in caught.value.error
    assert sent(upstream) == []


def test_parameters_an_agent_applies_reach_the_upstream(ghost: GhostServer, upstream: FakeUpstream) -> None:
    openai_client(ghost).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], parallel_tool_calls=False,
        reasoning_effort="low", n=1, logprobs=False, extra_body={"top_k": 5, "min_p": 0.1})
    body = sent(upstream)[-1]
    assert {k: body.get(k) for k in ("parallel_tool_calls", "reasoning_effort", "top_k", "min_p")} == {
        "parallel_tool_calls": False, "reasoning_effort": "low", "top_k": 5, "min_p": 0.1}


def test_the_plain_relay_passes_every_field_unchanged(client: httpx.Client, upstream: FakeUpstream) -> None:
    fields = {"n": 2, "logprobs": True, "top_logprobs": 3, "parallel_tool_calls": False, "reasoning_effort": "high",
              "temperature": 0.25, "logit_bias": {"42": -1}, "seed": 7, "a_server_extension": {"deep": [1, 2]},
              "response_format": {"type": "json_object"}, "user": "u1"}
    response = client.post("/v1/chat/completions", json={
        "model": PLAIN, "messages": [{"role": "user", "content": "hi"}], **fields})
    assert response.status_code == 200, response.text
    body = sent(upstream)[-1]
    assert {k: body.get(k) for k in fields} == fields
    assert body["messages"] == [{"role": "user", "content": "hi"}]  # nothing of the agent's added


# --- upstream error text ---------------------------------------------------------------------------

TRACEBACK = """Traceback (most recent call last):
  File "/opt/venv/lib/python3.11/site-packages/llama_cpp/server/app.py", line 376, in create_chat_completion
    llama = prepare_request_resources(body, llama_proxy, body_model, kwargs)
            ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
ValueError: grammar failed for /srv/models/secret-layout/model.gguf"""


@pytest.mark.parametrize("as_json", [True, False])
def test_an_upstream_traceback_reaches_the_client_without_frames_or_paths(
        ghost: GhostServer, upstream: FakeUpstream, as_json: bool) -> None:
    body = json.dumps({"error": {"message": TRACEBACK, "type": "internal_server_error"}}) if as_json else TRACEBACK
    # A probe that finds what it must not: the scripted text has the frame and the paths.
    assert 'File "/opt/venv' in TRACEBACK and "/srv/models" in TRACEBACK
    upstream.script(Reply(status=500, body=body, content_type="application/json" if as_json else "text/plain"))
    with pytest.raises(openai.APIStatusError) as caught:
        openai_client(ghost).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    message = caught.value.body["message"]
    assert caught.value.status_code == 502
    assert "ValueError: grammar failed for <path>" in message
    for leak in ("Traceback", 'File "', "/opt/venv", "/srv/models", "line 376", "^^^"):
        assert leak not in message, message


def test_tool_choice_none_sends_the_format_on_the_one_call(ghost: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content=ANSWER))
    reply = openai_client(ghost).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "A pet"}], response_format={"type": "json_object"},
        tools=[{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
        tool_choice="none")
    assert json.loads(reply.choices[0].message.content)["age"] == 3
    (only,) = sent(upstream)
    assert only["response_format"] == {"type": "json_object"} and only["tool_choice"] == "none"


def test_a_relayed_reply_of_two_choices_keeps_both_apart(client: httpx.Client, upstream: FakeUpstream) -> None:
    chunks = [{"choices": [{"index": 0, "delta": {"content": "first"}}, {"index": 1, "delta": {"content": "second"}}]},
              {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"},
                           {"index": 1, "delta": {}, "finish_reason": "stop"}]}]
    upstream.script(Reply(raw_stream="".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"))
    response = client.post("/v1/chat/completions", json={"model": PLAIN, "n": 2, "stream": True,
                                                         "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200, response.text
    relayed = [json.loads(b.removeprefix("data: ")) for b in response.text.split("\n\n")
               if b.startswith("data: {")]
    assert [c["choices"] for c in relayed] == [c["choices"] for c in chunks]  # as the upstream sent them
    assert sent(upstream)[-1]["n"] == 2
