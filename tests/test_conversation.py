"""Conversation fingerprints (pure): what must match for a request to continue a stored chat."""

from __future__ import annotations

from ghost.agent.client_tools import ClientTools
from ghost.agent.catalog import ModelChoice, listed_models, resolve_model
from ghost.events import ToolCall
import hashlib

import pytest

from ghost.store import conversation
from ghost.store.conversation import canonical, conversation_digest, opening_digest, prefix_digests

USER = {"role": "user", "content": "hi"}
REPLY = {"role": "assistant", "content": "Hello there."}


def test_prefix_digests_chain_so_a_prefix_has_the_digest_of_the_shorter_conversation() -> None:
    longer = prefix_digests([USER, REPLY, {"role": "user", "content": "more"}])
    assert longer[:2] == prefix_digests([USER, REPLY])
    assert longer[1] == conversation_digest([USER, REPLY])
    assert len(set(longer)) == 3


def test_what_a_client_cannot_send_back_exactly_does_not_count() -> None:
    folded = {"role": "assistant", "content": '<details type="reasoning" done="true">\n<summary>Thought</summary>'
              "\n→ execute\n</details>\n  Hello   there. "}
    thinking = {"role": "assistant", "content": "<think>hmm</think>Hello there."}
    assert conversation_digest([USER, folded]) == conversation_digest([USER, REPLY])
    assert conversation_digest([USER, thinking]) == conversation_digest([USER, REPLY])
    call = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "function": {"name": "f", "arguments": '{"a": 1, "b": 2}'}}]}
    same_call = {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_other", "function": {"name": "f", "arguments": {"b": 2, "a": 1}}}]}
    assert conversation_digest([USER, call]) == conversation_digest([USER, same_call])


def test_what_the_conversation_says_does_count() -> None:
    base = conversation_digest([USER, REPLY])
    assert conversation_digest([USER, {"role": "assistant", "content": "Hello, there."}]) != base
    assert conversation_digest([{"role": "system", "content": "hi"}, REPLY]) != base
    assert conversation_digest([USER, {**REPLY, "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}]) != base


def _chain_from_scratch(messages: list) -> list[str]:
    digests, previous = [], ""
    for message in messages:
        previous = hashlib.sha256(f"{previous}\0{canonical(message)}".encode()).hexdigest()
        digests.append(previous)
    return digests


def test_a_resent_conversation_chains_only_its_new_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    conversation._steps.clear()
    chat = [USER, REPLY, *({"role": "user" if i % 2 else "assistant", "content": f"turn {i}"} for i in range(40))]
    call = {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}
    chat.append(call)
    expected = _chain_from_scratch(chat)
    assert prefix_digests(chat) == expected  # the first time: every message canonicalised
    seen: list = []
    real = conversation.canonical
    monkeypatch.setattr(conversation, "canonical", lambda m: seen.append(m) or real(m))
    new = {"role": "user", "content": "and one more"}
    assert prefix_digests([*chat, new]) == _chain_from_scratch([*chat, new])
    assert seen == [call, new]  # the plain messages came from memory; a tool call is always read
    seen.clear()
    changed = [USER, {"role": "assistant", "content": "Hello  there!"}, *chat[2:]]
    assert prefix_digests(changed) == _chain_from_scratch(changed)  # an edit changes every later step
    assert len(seen) == len(changed) - 1


def test_the_remembered_steps_stay_within_their_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    conversation._steps.clear()
    monkeypatch.setattr(conversation, "MAX_STEP_CHARS", 1000)
    chat = [{"role": "user", "content": f"{i:03d}" + "x" * 97} for i in range(50)]  # 5,000 characters
    assert prefix_digests(chat) == _chain_from_scratch(chat)
    assert conversation._steps._chars <= 1000 and len(conversation._steps._steps) == 10
    huge = {"role": "user", "content": "y" * (conversation.MAX_STEP_TEXT + 1)}
    assert prefix_digests([huge]) == _chain_from_scratch([huge])
    assert all(len(text) <= conversation.MAX_STEP_TEXT for _, _, text in conversation._steps._steps)
    conversation._steps.clear()


def test_the_opening_is_the_first_user_message() -> None:
    system = {"role": "system", "content": "be brief"}
    assert opening_digest([system, USER, REPLY]) == opening_digest([USER])
    assert opening_digest([{"role": "user", "content": "### Task: title"}]) != opening_digest([USER])
    assert opening_digest(["not a message"]) and conversation_digest([["odd"]])  # restored archives may hold anything


def test_plain_variants_resolve_and_list_after_their_model() -> None:
    served = ["alpha", "beta:7b"]
    assert [c.listed_name for c in listed_models(served)] == ["alpha", "alpha-plain", "beta:7b", "beta:7b-plain"]
    assert resolve_model("alpha-plain", served) == ModelChoice("alpha", True)
    assert resolve_model("alpha:latest", served) == ModelChoice("alpha", False)
    assert resolve_model("beta:7b-plain", served) == ModelChoice("beta:7b", True)
    assert resolve_model("gamma-plain", served) is None and resolve_model("beta", served) is None
    assert resolve_model("x-plain", ["x", "x-plain"]) == ModelChoice("x-plain", False)  # a served name wins


def test_a_clashing_client_tool_is_renamed_there_and_back() -> None:
    tools = [{"type": "function", "function": {"name": n, "description": "d"}} for n in ("create_skill", "search")]
    client = ClientTools(tools, {"create_skill", "execute"})
    assert [t["function"]["name"] for t in client.schemas] == ["client__create_skill", "search"]
    assert client.owns("client__create_skill") and client.owns("search") and not client.owns("create_skill")
    assert client.for_client(ToolCall("c1", "client__create_skill", "{}")).name == "create_skill"
    history = [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "create_skill", "arguments": "{}"}}]}]
    assert client.history_for_model(history)[0]["tool_calls"][0]["function"]["name"] == "client__create_skill"
    choice = {"type": "function", "function": {"name": "create_skill"}}
    assert client.tool_choice_for_model(choice)["function"]["name"] == "client__create_skill"
    assert client.tool_choice_for_model("auto") == "auto"
