"""The whole-turn output budget (--max-turn-output-tokens) through a real Ghost on the fake upstream."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer

BUDGET = 20  # tokens; about 80 characters when estimated
USER = [{"role": "user", "content": "hi"}]
NOTE = "--max-turn-output-tokens"
LONG = " ".join(f"word{i}" for i in range(200))  # ~1,400 characters: far past the budget


@pytest.fixture(scope="module")
def server(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    with GhostServer("--upstream-url", upstream.url, "--max-turn-output-tokens", str(BUDGET),
                     home=tmp_path_factory.mktemp("budget-home")) as ghost:
        yield ghost


@pytest.fixture()
def oai(server: GhostServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.api_key, max_retries=0)


def test_a_reply_past_the_budget_is_cut_mid_stream_with_a_note(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content=LONG, usage=None))
    chunks = list(oai.chat.completions.create(model="fake-model", messages=USER, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    answer, _, note = text.partition("\n\n[Ghost stopped this turn")
    assert NOTE in note and str(BUDGET) in note
    assert answer and LONG.startswith(answer) and len(answer) < len(LONG) // 4  # cut early, not at the end
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]


def test_a_spent_budget_stops_before_the_next_round(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    # The first round's usage already passes the budget: its tool call is not run, no second round.
    upstream.script(Reply(content="", tool_calls=[{"name": "list_files", "arguments": {}}],
                          usage={"prompt_tokens": 50, "completion_tokens": BUDGET + 1, "total_tokens": 71}),
                    Reply(content="never asked for"))
    reply = oai.chat.completions.create(model="fake-model", messages=USER)
    assert NOTE in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "length"
    assert len(upstream.chat_requests()) == 1


def test_rounds_under_the_budget_end_as_usual(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    small = {"prompt_tokens": 50, "completion_tokens": BUDGET // 4, "total_tokens": 55}
    upstream.script(Reply(content="", tool_calls=[{"name": "list_files", "arguments": {}}], usage=small),
                    Reply(content="All listed.", usage=small))
    reply = oai.chat.completions.create(model="fake-model", messages=USER)
    assert reply.choices[0].message.content == "All listed."
    assert reply.choices[0].finish_reason == "stop"
    assert len(upstream.chat_requests()) == 2


def test_without_usage_the_rounds_are_estimated_from_characters(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    # Two rounds of ~60 characters each (~15 tokens): the second passes the budget of 20 mid-stream.
    sixty = "x" * 59 + " "
    upstream.script(Reply(content=sixty, tool_calls=[{"name": "list_files", "arguments": {}}], usage=None),
                    Reply(content=sixty * 3, usage=None))
    reply = oai.chat.completions.create(model="fake-model", messages=USER)
    assert NOTE in reply.choices[0].message.content
    assert len(upstream.chat_requests()) == 2
