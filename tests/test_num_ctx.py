"""Ollama's `num_ctx` on an agent model (Open WebUI's custom context length, `ChatOllama(num_ctx=…)`):
accepted, and the turn is fitted into that window when it is smaller than the upstream's — driven
with the `ollama` client and langchain-ollama against a real Ghost on the scripted fake upstream,
whose simulated window counts what each request really holds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import pytest
from langchain_ollama import ChatOllama

from ghost.agent.summary import INSTRUCTIONS
from ghost.testing.fake_upstream import ContextWindow, FakeUpstream, Reply
from ghost.testing.server import GhostServer

MODEL = "fake-model"
UPSTREAM_WINDOW = 32_768
SMALL = 4096
# About 12,000 tokens of earlier conversation: it fits the upstream's window, not a 4,096 one.
HISTORY = [m for turn in range(60) for m in (
    {"role": "user", "content": f"question {turn}: " + "words " * 60},
    {"role": "assistant", "content": f"answer {turn}: " + "more words " * 60})]
ASK = {"role": "user", "content": "and now?"}


def answering(body: dict[str, Any]) -> Reply:
    if body["messages"][0]["content"] == INSTRUCTIONS:
        return Reply(content="Summary: numbered questions, each answered.")
    return Reply(content="the answer")


@pytest.fixture(scope="module")
def window_upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    fake.context = ContextWindow(UPSTREAM_WINDOW, "llama.cpp")
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def server(window_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    with GhostServer("--upstream-url", window_upstream.url, home=tmp_path_factory.mktemp("num-ctx")) as ghost:
        yield ghost


@pytest.fixture()
def fake(window_upstream: FakeUpstream) -> FakeUpstream:
    window_upstream.requests.clear()
    window_upstream.responder = answering
    return window_upstream


def answer_call(fake: FakeUpstream) -> dict[str, Any]:
    """The turn's own (last) upstream call: what it held, in the fake's count."""
    calls = [r for r in fake.chat_requests() if r["body"]["messages"][0]["content"] != INSTRUCTIONS]
    return calls[-1]


def ollama_client(ghost: GhostServer) -> ollama.Client:
    return ollama.Client(host=ghost.url, headers={"X-Ghost-Key": ghost.api_key})


def test_without_num_ctx_the_upstreams_window_holds_the_whole_conversation(server: GhostServer,
                                                                          fake: FakeUpstream) -> None:
    reply = ollama_client(server).chat(model=MODEL, messages=[*HISTORY, ASK])
    assert reply.message.content == "the answer"
    assert answer_call(fake)["tokens"] > SMALL  # the probe: this conversation does not fit a 4,096 window
    assert answer_call(fake)["body"]["messages"][-1] == ASK


def test_num_ctx_is_the_turns_window(server: GhostServer, fake: FakeUpstream) -> None:
    reply = ollama_client(server).chat(model=MODEL, messages=[*HISTORY, ASK], options={"num_ctx": SMALL})
    assert reply.message.content == "the answer"
    sent = answer_call(fake)
    assert sent["tokens"] <= SMALL and sent["body"]["messages"][-1] == ASK  # fitted, the question kept
    assert "num_ctx" not in sent["body"] and "options" not in sent["body"]  # applied by Ghost, not sent


def test_langchain_ollamas_num_ctx_is_the_turns_window(server: GhostServer, fake: FakeUpstream) -> None:
    llm = ChatOllama(model=MODEL, base_url=server.url, num_ctx=SMALL,
                     client_kwargs={"headers": {"X-Ghost-Key": server.api_key}})
    messages = [(m["role"] if m["role"] == "user" else "ai", m["content"]) for m in [*HISTORY, ASK]]
    assert llm.invoke(messages).content == "the answer"
    assert answer_call(fake)["tokens"] <= SMALL


def test_num_ctx_larger_than_the_upstreams_window_is_capped_by_it(server: GhostServer, fake: FakeUpstream) -> None:
    reply = ollama_client(server).chat(model=MODEL, messages=[*HISTORY, ASK], options={"num_ctx": 1_000_000})
    assert reply.message.content == "the answer"
    assert SMALL < answer_call(fake)["tokens"] <= UPSTREAM_WINDOW  # never more than the upstream holds


def test_a_message_larger_than_num_ctx_is_the_400_naming_it(server: GhostServer, fake: FakeUpstream) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        ollama_client(server).chat(model=MODEL, messages=[{"role": "user", "content": "word " * 6000}],
                                   options={"num_ctx": SMALL})
    assert caught.value.status_code == 400 and "num_ctx set this turn's window to 4,096" in caught.value.error
    assert fake.chat_requests() == []


@pytest.mark.parametrize("value", [0, -5, "big", 1.5])
def test_a_num_ctx_that_is_not_a_positive_integer_is_refused(value: object, server: GhostServer,
                                                             fake: FakeUpstream) -> None:
    response = httpx.post(server.url + "/api/chat", headers=server.headers, timeout=30, json={
        "model": MODEL, "messages": [ASK], "stream": False, "options": {"num_ctx": value}})
    assert response.status_code in (400, 422) and "num_ctx" in response.json()["error"]
    assert fake.chat_requests() == []
