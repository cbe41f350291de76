"""`PlainPrefixes`: a resent conversation's known beginning found by list comparisons (issue 27)."""

from __future__ import annotations

from typing import Any

import pytest

from ghost import plainprefix
from ghost.api import known_messages as known_module
from ghost.api.known_messages import known_messages
from ghost.api.openai_request import chat_request, parsed_chat
from ghost.plainprefix import PlainPrefixes
from ghost.store import conversation


def chat(n: int, tag: str = "") -> list[dict[str, Any]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": f"{tag}message {i}"} for i in range(n)]


def test_a_resent_conversation_is_known_up_to_where_it_differs() -> None:
    memo: PlainPrefixes[int] = PlainPrefixes()
    first = chat(10)
    memo.remember("w", first, list(range(10)))
    assert memo.known("w", [*first, *chat(3, "new ")]) == list(range(10))  # it goes on
    assert memo.known("w", first[:4]) == [0, 1, 2, 3]  # a regenerated turn: shorter
    edited = [*first[:6], {"role": "user", "content": "edited"}, *first[7:]]
    assert memo.known("w", edited) == [0, 1, 2, 3, 4, 5]
    assert memo.known("other workspace", first) == []
    assert memo.known("w", chat(5, "another chat ")) == []


def test_only_plain_messages_are_remembered() -> None:
    memo: PlainPrefixes[int] = PlainPrefixes()
    call = {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {"n": 1}}}]}
    messages = [*chat(3), call, *chat(2, "after ")]
    memo.remember("w", messages, list(range(6)))
    assert memo.known("w", messages) == [0, 1, 2]  # up to the call
    tool = [*chat(2), {"role": "tool", "content": "42"}]
    memo.remember("w", tool, [7, 8, 9])
    assert memo.known("w", tool) == [7, 8]  # a tool message's shape depends on what came before
    named = [{"role": "user", "content": "message 0", "name": "x"}]
    memo.remember("w", named, [1])
    assert memo.known("w", named) == []


def test_values_are_copied_in_and_out_when_asked() -> None:
    memo: PlainPrefixes[dict[str, Any]] = PlainPrefixes(copy=dict)
    messages, values = chat(2), [{"v": 0}, {"v": 1}]
    memo.remember("w", messages, values)
    values[0]["v"] = "changed by the agent"
    got = memo.known("w", messages)
    assert got == [{"v": 0}, {"v": 1}]
    got[1]["v"] = "changed again"
    assert memo.known("w", messages) == [{"v": 0}, {"v": 1}]


def test_the_memo_stays_within_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plainprefix, "MAX_CHARS", 100)
    memo: PlainPrefixes[int] = PlainPrefixes()
    small = [{"role": "user", "content": "x" * 60}]
    memo.remember("w", small, [1])
    memo.remember("v", [{"role": "user", "content": "y" * 60}], [2])  # the two together are past it
    assert memo.known("w", small) == [] and memo.known("v", [{"role": "user", "content": "y" * 60}]) == [2]
    memo.remember("w", [{"role": "user", "content": "z" * 101}], [3])  # alone past it: not kept
    assert memo.known("w", [{"role": "user", "content": "z" * 101}]) == []


def _turn(messages: list[dict[str, Any]], workspace: str = "alice") -> list[dict[str, Any]]:
    payload = {"messages": messages}
    body, known = parsed_chat(payload, workspace)
    return chat_request(body, payload, default_stream=True, known=known, workspace=workspace).messages


def test_a_resent_conversation_looks_up_only_its_new_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    known_messages.clear()
    conversation._steps.clear()
    long_chat = chat(200)
    first = _turn([*long_chat, {"role": "user", "content": "first question"}])
    conversation.prefix_digests(first[:-1])
    looked_up: list[Any] = []
    real_key, real_step_key = known_module._key, conversation._step_key
    monkeypatch.setattr(known_module, "_key", lambda ws, m: looked_up.append(m) or real_key(ws, m))
    monkeypatch.setattr(conversation, "_step_key", lambda p, m: looked_up.append(m) or real_step_key(p, m))
    resent = [*long_chat, {"role": "user", "content": "first question"}, {"role": "assistant", "content": "an answer"},
              {"role": "user", "content": "second question"}]
    second = _turn(resent)
    digests = conversation.prefix_digests(second[:-1])
    # Of 203 messages, 202 resent: validation looks up the first new one and learns the 2 new; the
    # chain steps over the 2 it has not chained (the last turn's question and its answer).
    assert len(looked_up) == 5
    assert second == _turn_without_memo(resent)
    conversation._steps.clear()
    assert digests == conversation.prefix_digests(second[:-1])  # what hashing every message gives


def _turn_without_memo(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    known_messages.clear()
    return _turn(messages, "nobody yet")
