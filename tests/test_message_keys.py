"""Message keys carried from turn to turn: a resent conversation is hashed for its new messages only,
and every key and chain step is the one hashing it all again gives (ghost.agent.message_keys)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ghost.agent import context as context_module
from ghost.agent import message_keys
from ghost.agent.context import ContextFitter, _View
from ghost.agent.context_services import ContextServices
from ghost.agent.message_keys import CarriedKeys, chain_step
from ghost.agent.tokens import TokenCounter, message_key
from ghost.config import Settings
from ghost.llm.window import UpstreamWindow

SYSTEM = {"role": "system", "content": "You are Ghost. " * 50}


def chat(prior: int, last: str = "And now?") -> list[dict[str, Any]]:
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}"} for i in range(prior)]
    return [*messages, {"role": "user", "content": last}]


def resent(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the next request holds: equal messages, new dicts (a client sends JSON again)."""
    return [dict(m) for m in messages]


def plain_chain(messages: list[dict[str, Any]]) -> list[bytes]:
    chain = [b""]
    for message in messages:
        chain.append(chain_step(chain[-1], message_key(message)))
    return chain


@pytest.fixture()
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every message hashed, by the fitter or the carried keys."""
    seen: list[dict[str, Any]] = []

    def counting(message: dict[str, Any]) -> bytes:
        seen.append(message)
        return message_key(message)

    monkeypatch.setattr(context_module, "message_key", counting)
    monkeypatch.setattr(message_keys, "message_key", counting)
    return seen


def test_a_resent_conversation_is_hashed_for_its_new_messages_only(hashes: list[dict[str, Any]]) -> None:
    carried = CarriedKeys()
    first = chat(200)
    carried.leading(first)
    assert len(hashes) == 201
    hashes.clear()
    second = resent(first) + [{"role": "assistant", "content": "reply"}, {"role": "user", "content": "next"}]
    keyed = carried.leading(second)
    assert hashes == second[201:]
    assert keyed.keys == [message_key(m) for m in second]
    assert keyed.chain == plain_chain(second)


def test_an_edited_conversation_is_hashed_from_the_edit_on(hashes: list[dict[str, Any]]) -> None:
    carried = CarriedKeys()
    first = chat(50)
    carried.leading(first)
    hashes.clear()
    edited = resent(first)
    edited[30] = {"role": "user", "content": "message 30, edited"}
    keyed = carried.leading(edited)
    assert len(hashes) == 21
    assert keyed.keys == [message_key(m) for m in edited]
    assert keyed.chain == plain_chain(edited)


def test_keys_stop_at_the_first_message_that_is_not_plain(hashes: list[dict[str, Any]]) -> None:
    messages = chat(4)
    messages[2] = {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
                                                                          "function": {"name": "f", "arguments": "{}"}}]}
    keyed = CarriedKeys().leading(messages)
    assert keyed.keys == [message_key(m) for m in messages[:2]]
    assert keyed.chain == plain_chain(messages[:2])


def test_a_conversation_past_the_bound_is_not_remembered(hashes: list[dict[str, Any]]) -> None:
    carried = CarriedKeys(max_chars=100)
    first = chat(40)
    carried.leading(first)
    hashes.clear()
    carried.leading(resent(first))
    assert len(hashes) == 41


def services() -> ContextServices:
    return ContextServices(UpstreamWindow(8192, "test"), TokenCounter(), None, Path("/nonexistent"),  # type: ignore[arg-type]
                           Settings())


def fitter(shared: ContextServices) -> ContextFitter:
    return ContextFitter(None, shared, model="m", session_id=None, request_id="r")  # type: ignore[arg-type]


def keys_and_chain(fit: ContextFitter, messages: list[dict[str, Any]]) -> tuple[list[bytes], list[bytes]]:
    keys = fit._keys(messages)
    return keys, list(fit._chain(_View(messages, keys)))


def test_the_next_turn_hashes_the_system_prompt_and_the_new_messages(hashes: list[dict[str, Any]]) -> None:
    shared = services()
    first = [dict(SYSTEM), *chat(200)]
    keys_and_chain(fitter(shared), first)
    hashes.clear()
    second = [dict(SYSTEM), *resent(first[1:]), {"role": "assistant", "content": "reply"},
              {"role": "user", "content": "next"}]
    keys, chain = keys_and_chain(fitter(shared), second)
    assert sorted(map(id, hashes)) == sorted(map(id, [second[0], *second[-2:]]))
    assert (keys, chain) == keys_and_chain(fitter(services()), second)  # as if nothing were carried


def test_the_chain_skips_the_newest_user_message_as_before() -> None:
    shared = services()
    first = [dict(SYSTEM), *chat(20)]
    keys_and_chain(fitter(shared), first)
    second = [dict(SYSTEM), *resent(first[1:]), {"role": "assistant", "content": "reply"}]  # no new user message
    second.append({"role": "tool", "content": "a result", "tool_call_id": "c1"})
    assert keys_and_chain(fitter(shared), second) == keys_and_chain(fitter(services()), second)
    body = second[1:]
    newest = max(i for i, m in enumerate(body) if m["role"] == "user")
    chain = keys_and_chain(fitter(shared), second)[1]
    assert chain[newest + 1] == chain[newest] == plain_chain(body[:newest])[-1]


def test_each_workspace_has_its_own_carried_keys() -> None:
    shared = services()
    other = shared.for_workspace(None, Path("/nonexistent"))  # type: ignore[arg-type]
    assert other.carried is not shared.carried
