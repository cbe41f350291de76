"""Chat routes with the real openai and ollama clients against a real Ghost and the fake upstream."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import httpx
import ollama
import openai
import pytest

from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer

USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def server(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    with GhostServer("--upstream-url", upstream.url, "--keepalive-seconds", "0.2",
                     home=tmp_path_factory.mktemp("chat-home")) as ghost:
        yield ghost


@pytest.fixture()
def oai(server: GhostServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.api_key, max_retries=0)


@pytest.fixture()
def oll(server: GhostServer) -> ollama.Client:
    return ollama.Client(host=server.url, headers={"Authorization": f"Bearer {server.api_key}"})


def sse_events(response: httpx.Response) -> list[str]:
    return [block for block in response.text.split("\n\n") if block.strip()]


# --- OpenAI paths -------------------------------------------------------------------------------

def test_openai_non_streaming(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="The answer is 4."))
    reply = oai.chat.completions.create(model="fake-model", messages=USER)
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.content == "The answer is 4."
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.total_tokens == 15


def test_openai_streaming_relays_each_piece(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.script(Reply(chunks=["Hel", "lo", " wor", "ld"]))
    stream = oai.chat.completions.create(model="fake-model", messages=USER, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert pieces == ["Hel", "lo", " wor", "ld"]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert len({c.id for c in chunks}) == 1


def test_chat_path_speaks_openai_too(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="via /chat"))
    body = httpx.post(server.url + "/chat", headers=server.headers,
                      json={"model": "fake-model", "messages": USER}).json()
    assert body["choices"][0]["message"]["content"] == "via /chat"


def test_stream_usage_only_when_asked(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="a"), Reply(content="b"))
    without = list(oai.chat.completions.create(model="fake-model", messages=USER, stream=True))
    assert all(c.usage is None for c in without)
    with_usage = list(oai.chat.completions.create(model="fake-model", messages=USER, stream=True,
                                                  stream_options={"include_usage": True}))
    assert with_usage[-1].choices == [] and with_usage[-1].usage.prompt_tokens == 10


def test_usage_omitted_when_upstream_reports_none(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="no counts", usage=None))
    reply = oai.chat.completions.create(model="fake-model", messages=USER)
    assert reply.usage is None


def test_sse_headers_and_completion_id_from_request_id(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="x"))
    with httpx.stream("POST", server.url + "/v1/chat/completions",
                      headers={**server.headers, "X-Request-ID": "my-req-42"},
                      json={"model": "fake-model", "messages": USER, "stream": True}) as response:
        body = response.read().decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        assert response.headers["x-request-id"] == "my-req-42"
    first = json.loads(body.split("\n\n")[0].removeprefix("data: "))
    assert first["id"] == "chatcmpl-my-req-42"
    assert body.rstrip().endswith("data: [DONE]")


# --- Ollama paths -------------------------------------------------------------------------------

def test_ollama_chat_streams_ndjson_by_default(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(chunks=["a", "b", "c"]))
    with httpx.stream("POST", server.url + "/api/chat", headers=server.headers,
                      json={"model": "fake-model", "messages": USER}) as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert [l["message"]["content"] for l in lines[:-1]] == ["a", "b", "c"]
    final = lines[-1]
    assert final["done"] is True and final["done_reason"] == "stop"
    assert final["prompt_eval_count"] == 10 and final["eval_count"] == 5
    assert final["total_duration"] > 0


def test_ollama_client_chat_both_modes(oll: ollama.Client, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="whole"), Reply(chunks=["pa", "rts"]))
    assert oll.chat(model="fake-model", messages=USER).message.content == "whole"
    parts = list(oll.chat(model="fake-model", messages=USER, stream=True))
    assert "".join(p.message.content for p in parts) == "parts"
    assert parts[-1].done


def test_api_chat_non_streaming_carries_both_shapes(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="both"))
    body = httpx.post(server.url + "/api/chat", headers=server.headers,
                      json={"model": "fake-model", "messages": USER, "stream": False}).json()
    assert body["message"] == {"role": "assistant", "content": "both"} and body["done"] is True
    assert body["choices"][0]["message"]["content"] == "both" and body["object"] == "chat.completion"
    assert body["usage"]["total_tokens"] == 15 and body["eval_count"] == 5


def test_api_chat_with_sse_accept_gets_openai_stream(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="sse please"))
    response = httpx.post(server.url + "/api/chat", headers={**server.headers, "Accept": "text/event-stream"},
                          json={"model": "fake-model", "messages": USER})
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "data: [DONE]" in response.text and "sse" in response.text


def test_api_generate_stays_ndjson_whatever_the_accept_header(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="lines"))
    response = httpx.post(server.url + "/api/generate", headers={**server.headers, "Accept": "text/event-stream"},
                          json={"model": "fake-model", "prompt": "p"})
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert response.text.splitlines()[-1].startswith('{"model"') and "data:" not in response.text


def test_ollama_generate_streams_token_by_token(oll: ollama.Client, upstream: FakeUpstream) -> None:
    upstream.script(Reply(chunks=["1", "2", "3"]))
    parts = list(oll.generate(model="fake-model", prompt="count", system="be brief", stream=True))
    assert [p.response for p in parts] == ["1", "2", "3", ""]
    assert parts[-1].done and parts[-1].eval_count == 5 and parts[-1].prompt_eval_count == 10
    sent = upstream.chat_requests()[-1]["body"]
    assert sent["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "count"}]
    assert "tools" not in sent


def test_ollama_generate_non_streaming(oll: ollama.Client, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="one object"))
    reply = oll.generate(model="fake-model", prompt="hi", stream=False)
    assert reply.response == "one object" and reply.done


def test_ollama_options_and_images_are_mapped(oll: ollama.Client, upstream: FakeUpstream) -> None:
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    oll.chat(model="fake-model", messages=[{"role": "user", "content": "what is this", "images": [png]}],
             options={"temperature": 0.1, "num_predict": 7, "top_p": 0.5, "stop": ["END"], "seed": 3})
    sent = upstream.chat_requests()[-1]["body"]
    assert (sent["temperature"], sent["max_tokens"], sent["top_p"], sent["stop"], sent["seed"]) == (0.1, 7, 0.5, ["END"], 3)
    parts = sent["messages"][-1]["content"]
    assert parts[0] == {"type": "text", "text": "what is this"}
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,iVBOR")


def test_openai_shaped_messages_accepted_on_ollama_path(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="ok"))
    messages = [{"role": "user", "content": [{"type": "text", "text": "parts"}]}]
    response = httpx.post(server.url + "/api/chat", headers=server.headers,
                          json={"model": "fake-model", "messages": messages, "stream": False, "max_tokens": 9})
    assert response.status_code == 200
    sent = upstream.chat_requests()[-1]["body"]
    assert sent["messages"][-1]["content"] == [{"type": "text", "text": "parts"}] and sent["max_tokens"] == 9


# --- the turn's framing -----------------------------------------------------------------------

def test_system_prompt_goes_first_and_client_system_follows(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    oai.chat.completions.create(model="fake-model", messages=[{"role": "system", "content": "Be terse."}, *USER])
    sent = upstream.chat_requests()[-1]["body"]["messages"]
    assert sent[0]["role"] == "system" and "Ghost" in sent[0]["content"]
    assert sent[1] == {"role": "system", "content": "Be terse."}


def test_reasoning_and_think_blocks_never_reach_the_answer(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.script(Reply(reasoning="first I ponder", chunks=["<thi", "nk>secret pl", "an</th", "ink>The ", "answer"]))
    chunks = list(oai.chat.completions.create(model="fake-model", messages=USER, stream=True))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    assert content == "The answer"
    assert "first I ponder" in reasoning and "secret plan" in reasoning


def test_think_blocks_are_not_sent_back_upstream(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    history = [*USER, {"role": "assistant", "content": "<think>hidden</think>Visible", "reasoning_content": "x"},
               {"role": "user", "content": "and?"}]
    oai.chat.completions.create(model="fake-model", messages=history)
    sent = upstream.chat_requests()[-1]["body"]["messages"]
    assistant = [m for m in sent if m["role"] == "assistant"][0]
    assert assistant["content"] == "Visible" and "reasoning_content" not in assistant


def test_unknown_model_is_404(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="no-such-model", messages=USER)


@pytest.mark.parametrize("body, status", [
    ({"messages": []}, 422),
    ({"messages": "hi"}, 422),
    ({"messages": [{"role": "wizard", "content": "x"}]}, 422),
    ({"messages": USER, "stream": "yes"}, 422),
    ({"messages": USER, "temperature": "hot"}, 422),
    ({"messages": USER, "session_id": "../etc"}, 422),
    ({"messages": USER, "tools": [{"type": "function"}]}, 422),
])
def test_bad_bodies_get_clear_errors(server: GhostServer, body: dict, status: int) -> None:
    response = httpx.post(server.url + "/v1/chat/completions", headers=server.headers, json=body)
    assert response.status_code == status
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_malformed_json_is_400(server: GhostServer) -> None:
    response = httpx.post(server.url + "/api/chat", headers={**server.headers, "content-type": "application/json"},
                          content=b"{not json")
    # /api/chat is an Ollama route: Ollama's error shape, the same status
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]


def test_keepalive_comments_while_upstream_is_slow(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="late", first_delay=0.8))
    response = httpx.post(server.url + "/v1/chat/completions", headers=server.headers,
                          json={"model": "fake-model", "messages": USER, "stream": True})
    events = sse_events(response)
    assert ": keep-alive" in events
    assert "late" in response.text and events[-1] == "data: [DONE]"


def test_first_chunk_arrives_before_upstream_finishes(server: GhostServer, upstream: FakeUpstream) -> None:
    # The upstream sends "early", then holds " late" back until the test has seen "early".
    upstream.script(Reply(chunks=["early", " late"], hold="early-then-late", hold_after=2))
    seen: list[str] = []
    with httpx.stream("POST", server.url + "/v1/chat/completions", headers=server.headers, timeout=30,
                      json={"model": "fake-model", "messages": USER, "stream": True}) as response:
        for line in response.iter_lines():
            if '"content":"early"' in line:
                seen.append("early")
                # Ghost relayed it while the upstream still held the rest: nothing waited for it.
                assert upstream.hold_state("early-then-late") == "open"
                upstream.release("early-then-late")
            elif '"content":" late"' in line:
                seen.append("late")
    assert seen == ["early", "late"]


def test_concurrent_turns_are_independent(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    turns = [f"turn {i}" for i in range(4)]
    for turn in turns:  # each turn's reply is held until all four are at the upstream at once
        upstream.script_for(turn, Reply(chunks=[f"answer to {turn}", " (", turn, ")"], hold=turn, delay=0.01))
    results: dict[str, str | None] = {}

    def one(turn: str) -> None:
        reply = oai.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": turn}])
        results[turn] = reply.choices[0].message.content

    threads = [threading.Thread(target=one, args=(turn,)) for turn in turns]
    for t in threads:
        t.start()
    try:
        for turn in turns:  # serialised turns would never have all four open together
            assert upstream.wait_hold_state(turn, "open", timeout=60) == "open", f"{turn} never reached the upstream"
    finally:
        for turn in turns:
            upstream.release(turn)
        for t in threads:
            t.join(60)
    assert results == {turn: f"answer to {turn} ({turn})" for turn in turns}


def test_two_turns_of_one_session_at_once_keep_both_replies(server: GhostServer, upstream: FakeUpstream) -> None:
    # Both turns continue the same stored conversation and are held at the upstream together; the
    # one sent first is released last. History is append-only: neither reply overwrites the other,
    # and they are stored in the order the turns finished (events, not clocks, set that order).
    opening = [{"role": "user", "content": "two turns of one session"}]
    upstream.script(Reply(content="Ready."))
    headers = server.headers
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
        first = http.post("/v1/chat/completions", json={"model": "fake-model", "messages": opening})
        session = first.headers["x-ghost-session"]
    earlier = [*opening, {"role": "assistant", "content": "Ready."}]
    for turn in ("turn A", "turn B"):
        upstream.script_for(turn, Reply(chunks=[f"answer to {turn}", "."], hold=turn, hold_after=1))
    finished: list[str] = []
    answers: dict[str, httpx.Response] = {}

    def send(turn: str) -> None:
        with httpx.Client(base_url=server.url, headers={**headers, "X-Ghost-Session": session}, timeout=60) as http:
            answers[turn] = http.post("/v1/chat/completions", json={
                "model": "fake-model", "messages": [*earlier, {"role": "user", "content": turn}]})
        finished.append(turn)

    threads = {turn: threading.Thread(target=send, args=(turn,)) for turn in ("turn A", "turn B")}
    try:
        for thread in threads.values():
            thread.start()
        for turn in threads:
            assert upstream.wait_hold_state(turn, "open", timeout=60) == "open", f"{turn} never reached the upstream"
        upstream.release("turn B")
        threads["turn B"].join(60)
        upstream.release("turn A")
        threads["turn A"].join(60)
    finally:
        upstream.release_all()
        for thread in threads.values():
            thread.join(60)
    assert finished == ["turn B", "turn A"]
    for turn, answer in answers.items():
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-ghost-session"] == session
    stored = httpx.get(f"{server.url}/api/sessions/{session}", headers=headers, timeout=30).json()["messages"]
    assert [m["content"] for m in stored] == ["two turns of one session", "Ready.", "turn B", "answer to turn B.",
                                              "turn A", "answer to turn A."]


def test_turns_reuse_the_upstream_connections(server: GhostServer, upstream: FakeUpstream) -> None:
    # Sequential turns, streamed and not, go over kept-alive connections to the upstream: a reply
    # read to its end (the `[DONE]` marker and the body's terminator) gives its connection back.
    # The fake records each request's client port, one per connection Ghost opened. Connections
    # earlier tests left in the pool may take turns too; after the first batch, no new one is made.
    def batch(tag: str) -> set[int]:
        upstream.reset()
        # Paced: `[DONE]` and the body's end leave in separate writes, so a reader that stopped at
        # `[DONE]` would leave the body unfinished and its connection closed.
        upstream.script(*(Reply(delay=0.002) for _ in range(30)))
        with httpx.Client(base_url=server.url, headers=server.headers, timeout=30) as http:
            for i in range(30):
                body = {"model": "fake-model", "messages": [{"role": "user", "content": f"{tag} {i}"}],
                        "stream": i % 2 == 0}
                assert http.post("/v1/chat/completions", json=body).status_code == 200
        chats = upstream.chat_requests()
        assert len(chats) == 30
        return {r["client_port"] for r in chats}

    first = batch("first")
    second = batch("second")
    assert len(first) < 10  # not one per turn
    assert second <= first  # every turn of the second batch went over a connection already open
