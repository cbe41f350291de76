"""A `-plain` model on OpenAI's wire relays the upstream's reply as it is: every choice of `n` > 1,
log-probabilities, fields only that server sends — under Ghost's model name and completion id —
with Ghost's bounds on an upstream reply kept. Driven with the official `openai` client against a
real Ghost on the scripted fake upstream. On Ollama's wire, what it cannot carry is a 400."""

from __future__ import annotations

import json

import httpx
import ollama
import openai
import pytest

from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer

PLAIN = "fake-model-plain"
USER = [{"role": "user", "content": "hi"}]


def openai_client(ghost: GhostServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{ghost.url}/v1", api_key=ghost.api_key, max_retries=0)


def sent(upstream: FakeUpstream) -> dict:
    return upstream.chat_requests()[-1]["body"]


def test_n_2_gives_two_choices(ghost: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="a cat"))
    reply = openai_client(ghost).chat.completions.create(model=PLAIN, messages=USER, n=2)
    assert [(c.index, c.message.content) for c in reply.choices] == [(0, "a cat"), (1, "a cat (2)")]
    assert reply.model == PLAIN and reply.id.startswith("chatcmpl-") and "fake" not in reply.id
    assert reply.usage is not None and reply.usage.total_tokens == 15
    assert sent(upstream)["n"] == 2 and sent(upstream)["stream"] is False  # asked as the client asked


def test_n_2_streamed_gives_two_choices(ghost: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="a cat"))
    stream = openai_client(ghost).chat.completions.create(model=PLAIN, messages=USER, n=2, stream=True,
                                                          stream_options={"include_usage": True})
    texts: dict[int, str] = {}
    finished, usage = set(), None
    for chunk in stream:
        assert chunk.model == PLAIN
        usage = chunk.usage or usage
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finished.add(choice.index)
    assert texts == {0: "a cat", 1: "a cat (2)"} and finished == {0, 1}
    assert usage is not None and usage.total_tokens == 15
    assert sent(upstream)["stream"] is True and sent(upstream)["stream_options"] == {"include_usage": True}


def test_logprobs_reach_the_client(ghost: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="one two"))
    reply = openai_client(ghost).chat.completions.create(model=PLAIN, messages=USER, logprobs=True, top_logprobs=2)
    entries = reply.choices[0].logprobs.content
    assert [e.token for e in entries] == ["one", " two"] and [e.logprob for e in entries] == [-0.125, -0.25]
    assert [[t.token for t in e.top_logprobs] for e in entries] == [["one", "alt1"], [" two", "alt1"]]


def test_logprobs_reach_the_client_streamed(ghost: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="one two"))
    stream = openai_client(ghost).chat.completions.create(model=PLAIN, messages=USER, logprobs=True,
                                                          top_logprobs=2, stream=True)
    entries = [e for chunk in stream for c in chunk.choices if c.logprobs and c.logprobs.content
               for e in c.logprobs.content]
    assert [(e.token, e.logprob, len(e.top_logprobs)) for e in entries] == [("one", -0.125, 2), (" two", -0.25, 2)]


def test_fields_only_the_upstream_knows_are_relayed_both_ways(client: httpx.Client, upstream: FakeUpstream) -> None:
    chunk = {"id": "x", "object": "chat.completion.chunk", "model": "upstream-name", "system_fingerprint": "fp_1",
             "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop", "stop_reason": 7}],
             "timings": {"predicted_ms": 1.5}}
    upstream.script(Reply(raw_stream=f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n"))
    response = client.post("/v1/chat/completions", json={"model": PLAIN, "messages": USER, "stream": True})
    blocks = [b for b in response.text.split("\n\n") if b and not b.startswith(":")]
    assert blocks[-1] == "data: [DONE]"
    relayed = json.loads(blocks[0].removeprefix("data: "))
    assert relayed == {**chunk, "model": PLAIN, "id": f"chatcmpl-{response.headers['x-request-id']}"}


def test_a_client_tool_call_is_relayed(ghost: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="", tool_calls=[{"name": "lookup", "arguments": {"q": "x"}}]))
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    reply = openai_client(ghost).chat.completions.create(model=PLAIN, messages=USER, tools=tools,
                                                         tool_choice="auto")
    (call,) = reply.choices[0].message.tool_calls
    assert call.function.name == "lookup" and json.loads(call.function.arguments) == {"q": "x"}
    assert sent(upstream)["tools"] == tools and sent(upstream)["tool_choice"] == "auto"
    assert sent(upstream)["messages"] == USER  # nothing of the agent's added


def test_an_upstream_that_ignores_stream_false_is_a_502(client: httpx.Client, upstream: FakeUpstream) -> None:
    upstream.script(Reply(raw_stream='data: {"choices": []}\n\ndata: [DONE]\n\n'))
    response = client.post("/v1/chat/completions", json={"model": PLAIN, "messages": USER})
    assert response.status_code == 502 and "instead of a JSON reply" in response.json()["error"]["message"]


def test_an_upstream_that_ignores_stream_true_is_relayed_as_one_chunk(ghost: GhostServer,
                                                                       upstream: FakeUpstream) -> None:
    whole = {"id": "x", "object": "chat.completion", "model": "m",
             "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole"}, "finish_reason": "stop"},
                         {"index": 1, "message": {"role": "assistant", "content": "other"}, "finish_reason": "stop"}]}
    upstream.script(Reply(body=json.dumps(whole)))
    stream = openai_client(ghost).chat.completions.create(model=PLAIN, messages=USER, n=2, stream=True)
    chunks = list(stream)
    assert [(c.index, c.delta.content) for chunk in chunks for c in chunk.choices] == [(0, "whole"), (1, "other")]


@pytest.mark.parametrize("stream", [True, False])
def test_an_upstream_error_status_is_scrubbed_before_the_first_byte(client: httpx.Client, upstream: FakeUpstream,
                                                                     stream: bool) -> None:
    body = 'Traceback (most recent call last):\n  File "/opt/x/app.py", line 3, in f\nValueError: bad /srv/m.gguf'
    upstream.script(Reply(status=500, body=body, content_type="text/plain"))
    response = client.post("/v1/chat/completions", json={"model": PLAIN, "messages": USER, "stream": stream})
    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert "ValueError: bad <path>" in message and 'File "' not in message and "/opt/x" not in message


def test_a_prompt_over_the_window_is_the_400_context_length_exceeded(client: httpx.Client,
                                                                     upstream: FakeUpstream) -> None:
    refusal = {"error": {"code": 400, "message": "the request exceeds the available context size, try increasing it",
                         "type": "exceed_context_size_error", "n_prompt_tokens": 9000, "n_ctx": 8192}}
    upstream.script(Reply(status=400, body=json.dumps(refusal)))
    response = client.post("/v1/chat/completions", json={"model": PLAIN, "messages": USER})
    assert response.status_code == 400 and response.json()["error"]["type"] == "context_length_exceeded"


# --- bounds: a hostile upstream's reply is cut off on the relay too -----------------------------------

GARBAGE = {
    "not JSON": "data: {{{ not json\n\n",
    "choices not a list": 'data: {"choices": 5}\n\n',
    "a delta that is a string": 'data: {"choices": [{"index": 0, "delta": "oops"}]}\n\n',
    "a tool-call index that is a string": 'data: {"choices": [{"delta": {"tool_calls": [{"index": "x"}]}}]}\n\n',
    "an error chunk": 'data: {"error": {"message": "boom"}}\n\n',
    "no end": 'data: {"choices": [{"index": 0, "delta": {"content": "cut"}}]}\n\n',
}


@pytest.mark.parametrize("case", list(GARBAGE))
def test_a_garbage_stream_is_an_upstream_error(case: str, client: httpx.Client, upstream: FakeUpstream) -> None:
    upstream.script(Reply(raw_stream=GARBAGE[case]))
    response = client.post("/v1/chat/completions", json={"model": PLAIN, "messages": USER, "stream": True})
    if response.status_code == 200:  # the first chunk was good: the error came in-band
        blocks = [b for b in response.text.split("\n\n") if b and not b.startswith(":")]
        assert blocks[-2].startswith("event: error\ndata: ") and blocks[-1] == "data: [DONE]"
        assert json.loads(blocks[-2].split("data: ", 1)[1])["error"]["type"].startswith("upstream")
    else:
        assert response.status_code == 502 and response.json()["error"]["type"].startswith("upstream"), response.text


def test_a_garbage_whole_reply_is_a_502(client: httpx.Client, upstream: FakeUpstream) -> None:
    for body in ("not json", json.dumps([1, 2]), json.dumps({"choices": [{"message": "x"}]}),
                 "[" * 10_000 + "]" * 10_000):
        upstream.script(Reply(body=body))
        response = client.post("/v1/chat/completions", json={"model": PLAIN, "messages": USER})
        assert response.status_code == 502, (body[:20], response.text)
        assert response.json()["error"]["type"].startswith("upstream")


@pytest.mark.parametrize("flood,setting", [({"kind": "content", "size": 24 * 2**20}, "--upstream-max-reply-chars"),
                                           ({"kind": "arguments", "size": 24 * 2**20}, "--upstream-max-tool-call-chars"),
                                           ({"kind": "calls", "size": 300}, "--upstream-max-tool-calls"),
                                           ({"kind": "line", "size": 24 * 2**20}, "longer than")])
def test_a_flood_is_cut_off(flood: dict, setting: str, ghost: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(flood=flood))
    with httpx.stream("POST", ghost.url + "/v1/chat/completions", headers=ghost.headers, timeout=120,
                      json={"model": PLAIN, "messages": USER, "stream": True}) as streamed:
        text = streamed.read().decode()
    assert streamed.status_code in (200, 502)
    assert "upstream_reply_too_large" in text and setting in text
    assert len(text) < 8 * 2**20  # cut off near the bound (2 M characters), not relayed whole


def test_a_whole_reply_past_the_size_bound_is_refused(client: httpx.Client, upstream: FakeUpstream) -> None:
    huge = json.dumps({"choices": [{"index": 0, "message": {"content": "x" * (13 * 2**20)}}]})
    upstream.script(Reply(body=huge))
    response = client.post("/v1/chat/completions", json={"model": PLAIN, "messages": USER})
    assert response.status_code == 502 and response.json()["error"]["type"] == "upstream_reply_too_large"


def test_the_relay_still_serves_after_garbage(ghost: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(raw_stream="data: {{{\n\n"), Reply(content="fine again"))
    with pytest.raises(openai.APIStatusError):
        openai_client(ghost).chat.completions.create(model=PLAIN, messages=USER, stream=True)
    assert openai_client(ghost).chat.completions.create(model=PLAIN, messages=USER).choices[0].message.content \
        == "fine again"


# --- Ollama's wire ----------------------------------------------------------------------------------


@pytest.mark.parametrize("field,value", [("n", 2), ("logprobs", True), ("top_logprobs", 2)])
@pytest.mark.parametrize("path", ["/api/chat", "/api/generate"])
def test_on_ollamas_wire_what_it_cannot_carry_is_a_400(field: str, value: object, path: str, client: httpx.Client,
                                                       upstream: FakeUpstream) -> None:
    body = {"model": PLAIN, "stream": False, field: value,
            **({"messages": USER} if path == "/api/chat" else {"prompt": "hi"})}
    response = client.post(path, json=body)
    assert response.status_code == 400 and response.json()["error"].startswith(f"{field}: not relayed on Ollama's API")
    assert upstream.chat_requests() == []


def test_on_ollamas_wire_the_plain_model_answers_as_before(ghost: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="plain answer"))
    client = ollama.Client(host=ghost.url, headers={"X-Ghost-Key": ghost.api_key})
    assert client.chat(model=PLAIN, messages=USER, options={"seed": 3}).message.content == "plain answer"
    assert sent(upstream)["seed"] == 3 and sent(upstream)["messages"] == USER
